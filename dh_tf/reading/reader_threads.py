"""Read ahead on background threads, a bounded number of items ahead of the consumer, in order.

:func:`read_in_order` reads a list of items (pages) on several reader threads and delivers them in
list order (NOTE [ Reader threads ]).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
U = TypeVar("U")
P = TypeVar("P", contravariant=True)
R = TypeVar("R", covariant=True)

READER_THREAD_NAME = "dh_tf-reader"
_POLL_S = 0.05
_ITEM, _ERROR = range(2)

MAX_DEFAULT_READER_THREADS = 8


def default_reader_threads() -> int:
    """The default ``reader_threads``: one per CPU core this process may use, at most 8.

    Deephaven's Parquet decode runs on the reader threads (jpy releases the GIL in engine calls), so
    more cores read faster; beyond ~8 the pages in flight cost memory for little gain.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_READER_THREADS, cores))


class ItemReader(Protocol[P, R]):
    """Reads items on one thread: made, used and closed on that thread."""

    def read(self, item: P) -> R: ...

    def close(self) -> None: ...


class _Ordered(Generic[U]):
    """What the reader threads and the consumer of :func:`read_in_order` share, under one condition."""

    def __init__(self, num_items: int, permits: int) -> None:
        self.ready = threading.Condition()
        self.permits = permits
        self.next_index = 0
        self.num_items = num_items
        self.results: dict[int, tuple[int, object]] = {}
        self.stop = False

    def claim(self) -> int | None:
        """The next item index for a reader thread, once a page permit is free; None: no more work."""
        with self.ready:
            while not self.stop and self.next_index < self.num_items and self.permits == 0:
                self.ready.wait(_POLL_S)
            if self.stop or self.next_index >= self.num_items:
                return None
            self.permits -= 1
            self.next_index += 1
            return self.next_index - 1

    def put(self, index: int, kind: int, payload: object) -> None:
        with self.ready:
            self.results[index] = (kind, payload)
            if kind == _ERROR:
                self.next_index = self.num_items  # nothing after a failed item is read
            self.ready.notify_all()

    def take(self, index: int) -> tuple[int, object]:
        with self.ready:
            while index not in self.results:
                self.ready.wait(_POLL_S)
            return self.results.pop(index)

    def release(self) -> None:
        with self.ready:
            self.permits += 1
            self.ready.notify_all()

    def finish(self) -> None:
        with self.ready:
            self.stop = True
            self.results.clear()
            self.ready.notify_all()


def read_in_order(
    items: Sequence[T], open_reader: Callable[[], ItemReader[T, U]], *, reader_threads: int, prefetch: int
) -> Iterator[U]:
    """Yields ``open_reader().read(item)`` for each item, in order, read on ``reader_threads`` threads.

    NOTE [ Reader threads ]
    Each thread opens its own reader (its own engine fill contexts and chunks) on first use, claims
    the next unclaimed item, reads it, and parks the result in a reorder buffer; the consumer takes
    results strictly in item order, so delivery order never depends on thread timing. Consecutive
    items go to different threads, each item a contiguous page. Memory is bounded by *permits*: a
    thread claims an item only with a free permit, and the consumer gives a page's permit back when
    it asks for the next page, so at most ``prefetch + reader_threads`` pages exist at once (read,
    being read, or held by the consumer). An error reading item ``i`` stops all claiming and is
    re-raised (same object) when the consumer reaches item ``i``, after items ``0..i-1``. Every way
    out of the consuming generator (exhaustion, ``break``/close, an exception, ``del``,
    KeyboardInterrupt) stops and joins every thread; each reader is closed on its own thread.

    NOTE [ Cancelling reads ]
    Stopping must not wait for a read in flight that can take long: a remote page's Flight DoGet
    runs up to its read timeout. So on the way out the consumer calls ``cancel()`` on each reader
    that has one (from the consumer's thread, while the reader's own thread may be inside
    ``read``); a cancelled read raises, its thread sees the stop and exits, and the join returns at
    once. Readers without ``cancel`` (the engine's: one chunk copy at a time) are simply joined. With
    one thread and ``prefetch == 0`` everything runs inline on the caller's thread.

    Raises:
        Whatever a reader raised, re-raised in the consumer.
    """
    if not items:
        return
    if reader_threads == 1 and prefetch == 0:
        reader = open_reader()
        try:
            for item in items:
                yield reader.read(item)
        finally:
            reader.close()
        return
    shared: _Ordered[U] = _Ordered(len(items), prefetch + reader_threads)
    opened: list[ItemReader[T, U]] = []  # for cancel(): NOTE [ Cancelling reads ]

    def work() -> None:
        reader = None
        try:
            while (index := shared.claim()) is not None:
                try:
                    if reader is None:
                        reader = open_reader()
                        with shared.ready:
                            opened.append(reader)
                    shared.put(index, _ITEM, reader.read(items[index]))
                except BaseException as error:
                    shared.put(index, _ERROR, error)
                    return
        finally:
            if reader is not None:
                reader.close()

    threads = [
        threading.Thread(target=work, name=f"{READER_THREAD_NAME}-{n}", daemon=True)
        for n in range(min(reader_threads, len(items)))
    ]
    for thread in threads:
        thread.start()
    try:
        for index in range(len(items)):
            kind, payload = shared.take(index)
            if kind == _ERROR:
                raise payload  # type: ignore[misc]
            yield payload  # type: ignore[misc]
            shared.release()
    finally:
        shared.finish()
        with shared.ready:
            cancellable = [reader for reader in opened if hasattr(reader, "cancel")]
        for reader in cancellable:
            reader.cancel()  # type: ignore[attr-defined]
        for thread in threads:
            while thread.is_alive():
                thread.join(_POLL_S)
