"""The bounded page queue between a followed source and the consumer (NOTE [ Follow mode ] in follow.py)."""

from __future__ import annotations

import collections
import threading
import time

from dh_tf.errors import FollowError
from dh_tf.sources.protocol import RowPage

ON_OVERFLOW = ("drop", "error")


class PageQueue:
    """A FIFO of at most ``capacity`` pages, then at most one error: the ``PageSink`` a feed delivers into.

    One producer (the feed's reader thread or the update cycle) and one consumer (the iterating
    thread). Attributes: ``high_water`` (the most pages ever queued at once), ``dropped_rows`` (blink
    rows that did not fit, reported by the feed).
    """

    def __init__(self, capacity: int, *, on_overflow: str, page_rows: int) -> None:
        self.capacity = capacity
        self.high_water = 0
        self.dropped_rows = 0
        self._on_overflow = on_overflow
        self._page_rows = page_rows
        self._pages: collections.deque[tuple[float, RowPage]] = collections.deque()
        self._error: BaseException | None = None
        self._ready = threading.Condition()

    def __len__(self) -> int:
        return len(self._pages)

    def free(self) -> int:
        with self._ready:
            return self.capacity - len(self._pages)

    def wait_for_space(self, timeout: float) -> bool:
        with self._ready:
            if len(self._pages) >= self.capacity and self._error is None:
                self._ready.wait(timeout)
            return len(self._pages) < self.capacity

    def put(self, page: RowPage) -> None:
        with self._ready:
            self._pages.append((time.monotonic(), page))
            self.high_water = max(self.high_water, len(self._pages))
            self._ready.notify_all()

    def overflow(self, rows: int) -> None:
        """Counts blink rows that did not fit; with ``on_overflow="error"`` also fails the stream."""
        self.dropped_rows += rows
        if self._on_overflow == "error":
            self.fail(
                FollowError(
                    f"follow: the consumer fell behind a blink table; {rows} rows of one update cycle did not "
                    f"fit the queue ({self.capacity} pages of up to {self._page_rows} rows) and "
                    "on_overflow='error'; consume faster, raise prefetch / page_rows, or pass on_overflow='drop'"
                )
            )

    def fail(self, error: BaseException) -> None:
        with self._ready:
            if self._error is None:
                self._error = error
            self._ready.notify_all()

    def closed(self) -> bool:
        return self._error is not None

    def wake(self) -> None:
        """Wakes a consumer waiting in :meth:`get` (e.g. to see a stop)."""
        with self._ready:
            self._ready.notify_all()

    def get(self, timeout: float) -> tuple[float, RowPage] | None:
        """The oldest page and when it was queued, or None after ``timeout`` seconds.

        Raises:
            BaseException: the stream's error, once the pages queued before it are out.
        """
        with self._ready:
            if not self._pages and self._error is None:
                self._ready.wait(timeout)
            if self._pages:
                page = self._pages.popleft()
                self._ready.notify_all()
                return page
            if self._error is not None:
                raise self._error
            return None
