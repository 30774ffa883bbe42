"""Run an iterator on a background thread, a bounded number of items ahead of the consumer.

NOTE [ Prefetch thread lifecycle ]
The producer thread is started when iteration starts and is always stopped and joined when the
consuming generator ends, whatever the way out: exhaustion, ``break`` (the generator is closed),
an exception in the consumer, ``del``/garbage collection, or KeyboardInterrupt. An exception in the
producer is re-raised in the consumer, same object, same type, with its traceback. The producer's
own iterator is created and closed on the producer thread, so anything it opens (engine contexts)
is released on the thread that opened it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

THREAD_NAME = "dh_tf-prefetch"
_POLL_S = 0.05
_ITEM, _END, _ERROR = range(3)


def prefetched(make_iterator: Callable[[], Iterator[T]], depth: int) -> Iterator[T]:
    """Yields the items of ``make_iterator()``, produced up to ``depth`` items ahead on a thread.

    With ``depth == 0`` no thread is started and the iterator runs in the caller's thread.
    Memory stays bounded by ``depth`` items in the queue plus one being produced.

    Raises:
        Whatever the producer raised, re-raised in the consumer.
    """
    if depth == 0:
        yield from make_iterator()
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple) -> bool:
        while not stop.is_set():
            try:
                items.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = None
        try:
            iterator = make_iterator()
            for item in iterator:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as error:
            put((_ERROR, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        while True:
            kind, payload = items.get()
            if kind == _ITEM:
                yield payload
            elif kind == _END:
                return
            else:
                raise payload
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(_POLL_S)
