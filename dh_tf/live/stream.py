"""The consumer side of follow mode: queued pages become batches of ``batch_size`` rows, flushed by ``max_wait``.

See NOTE [ Follow mode ] in follow.py. Runs on the iterating thread: pages of native arrays (as a
feed delivers them) get their null policies and casts here (``pages.PageReader``), so the engine's
update cycle only copies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.live.page_queue import PageQueue
from dh_tf.reading.layout import Layout
from dh_tf.reading.pages import PageReader
from dh_tf.sources.protocol import RowPage, Span
from dh_tf.sources.ragged import PaddedColumn

POLL_S = 0.05
"""How long the consumer waits for a page before looking at its stop flag and ``max_wait`` again."""


class PageConverter:
    """Turns a delivered page into one C-ordered array per output field (null policies, casts)."""

    def __init__(self, layout: Layout, column_types: Mapping[str, str]) -> None:
        self._page = _DeliveredPage()
        self._reader = PageReader(self._page, layout, column_types)

    def __call__(self, page: RowPage) -> list[np.ndarray]:
        """The page's output arrays.

        Raises:
            NullValueError: a column with null policy ``"error"`` holds a null (the message gives its
                table position for append-only tables, its row in the page otherwise).
        """
        first = page.first_position or 0
        self._page.page = page
        try:
            return self._reader.read_spans([(first, first + page.rows)])
        finally:
            self._page.page = None


class _DeliveredPage:
    """A span reader (NOTE [ Sources ]) that hands ``PageReader`` the page a feed already read."""

    page: RowPage | None = None

    def read(
        self, spans: Sequence[Span], out: Mapping[str, np.ndarray], padded: Mapping[str, PaddedColumn] | None = None
    ) -> dict[str, np.ndarray | None]:
        page = self.page
        assert page is not None
        for name, values in page.arrays.items():
            out[name][...] = values
        for name, column in (padded or {}).items():  # the feed read them padded (NOTE [ Ragged arrays ])
            column.lengths[...] = page.lengths[name]
        return dict(page.masks)

    def close(self) -> None:
        self.page = None


class BatchCutter:
    """Cuts pages into batches of exactly ``batch_size`` rows, carrying remainders (NOTE [ Follow mode ]).

    A partial batch is yielded only when its oldest row has waited ``max_wait`` seconds, or as the
    last batch of ``max_rows``. Counts ``delivered_rows`` and ``delivered_batches``.
    """

    def __init__(
        self,
        queue: PageQueue,
        convert: PageConverter,
        *,
        batch_size: int,
        max_wait: float | None,
        max_rows: int | None,
        max_batches: int | None,
    ) -> None:
        self._queue, self._convert = queue, convert
        self._batch_size, self._max_wait = batch_size, max_wait
        self._max_rows, self._max_batches = max_rows, max_batches
        self.delivered_rows = 0
        self.delivered_batches = 0

    def rows_left(self) -> float:
        return math.inf if self._max_rows is None else self._max_rows - self.delivered_rows

    def done(self) -> bool:
        """True once ``max_rows`` or ``max_batches`` is reached."""
        return self.rows_left() <= 0 or (self._max_batches is not None and self.delivered_batches >= self._max_batches)

    def batches(self, stopped: threading.Event) -> Iterator[list[np.ndarray]]:
        """One list of field arrays per batch, until ``stopped``, :meth:`done` or the queue's error.

        Raises:
            BaseException: the queue's error (after the batches of the pages before it), or what
                converting a page raised (``NullValueError``).
        """
        pending: list[list[np.ndarray]] = []
        times: list[float] = []  # when each pending page was queued
        pending_rows = 0
        while not stopped.is_set() and not self.done():
            timeout = POLL_S
            if pending_rows and self._max_wait is not None:
                timeout = min(timeout, max(0.0, times[0] + self._max_wait - time.monotonic()))
            queued = self._queue.get(timeout)
            if queued is not None:
                times.append(queued[0])
                pending.append(self._convert(queued[1]))
                pending_rows += queued[1].rows
            if not pending_rows:
                continue
            flush = self._max_wait is not None and time.monotonic() - times[0] >= self._max_wait
            if pending_rows < self._batch_size and not flush and pending_rows < self.rows_left():
                continue
            sizes = [len(arrays[0]) for arrays in pending]
            merged = [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*pending)]
            offset = 0
            while offset < pending_rows and not self.done():
                take = int(min(self._batch_size, pending_rows - offset, self.rows_left()))
                if take < self._batch_size and not flush and take < self.rows_left():
                    break  # a partial batch waits for more rows (or for max_wait)
                batch = [a[offset : offset + take] for a in merged]
                offset += take
                self.delivered_rows += take
                self.delivered_batches += 1
                yield batch
                if stopped.is_set():
                    return
            # The rest keeps the arrival time of the page its first row came from.
            if offset < pending_rows:
                times = [times[int(np.searchsorted(np.cumsum(sizes), offset, side="right"))]]
                pending = [[a[offset:] for a in merged]]
            else:
                times, pending = [], []
            pending_rows -= offset


class FollowStream:
    """The iterator of a ``Follower``: its batches; closing it stops the follower, dropping it too (without waiting).

    ``stop(wait)`` stops the follower, waiting a bounded time for its reader or not at all.
    """

    def __init__(self, batches: Iterator[Any], stop: Callable[[bool], None]) -> None:
        self._batches = batches
        self._stop = stop

    def __iter__(self) -> FollowStream:
        return self

    def __next__(self) -> Any:
        return next(self._batches)

    def close(self) -> None:
        """Stops the follower (removes the listener, ends the reader). Safe to call twice."""
        self._batches.close()  # type: ignore[attr-defined]
        self._stop(True)

    def __del__(self) -> None:
        try:
            self._batches.close()  # type: ignore[attr-defined]
            self._stop(False)  # the garbage collector's thread never waits
        except Exception:  # interpreter shutdown: the JVM may be gone already
            pass
