"""Cache file bytes as arrays over private mappings, within a process-wide budget of live mappings.

One job: hand the epoch cache (``reading/epoch_cache.py``) a file range as a numpy array, mapped while
fewer than :data:`MAX_LIVE_MAPPINGS` mappings are alive in this process, read into a new aligned array
past it (NOTE [ Mapped cache reads ]).
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import threading
import weakref

import numpy as np

from dh_tf.errors import CacheError
from dh_tf.reading.buffers import empty_aligned

MAX_LIVE_MAPPINGS: int | None = None
"""Cache mappings alive at once in this process, at most; None: a quarter of ``vm.max_map_count``.

Past it, cached pages are read into new arrays instead of mapped (NOTE [ Mapped cache reads ])."""


def file_bytes(fd: int, offset: int, size: int, transient: bool = False) -> np.ndarray:
    """The ``size`` bytes at ``offset`` of ``fd`` as a uint8 array over a new private mapping of them.

    Past :data:`MAX_LIVE_MAPPINGS` mappings alive in this process, a new aligned array holding a
    copy of them instead, unless ``transient`` (the caller drops the array at once: a shuffled page's
    gather, whose range may span the whole file).

    NOTE [ Mapped cache reads ]
    A cached page is not copied out of the file: each of its spans is mapped and handed on as an
    array over that mapping. An unshuffled page is one span, so the array TensorFlow gets *is* the
    page cache (NOTE [ Aligned page arrays ]: a mapping starts on a memory page, and a page's span
    starts on a multiple of ``batch_size`` rows). A shuffled page is one row gather per field
    (``EpochCache.gather``) from a single mapping of the file range its spans lie in, into a new
    aligned array: joining the spans first cost one more copy of the page into fresh memory (per 32
    MiB page of 16 float32: 12.7 vs 18.4 ms median, measured in one process). The mapping is private
    and writable (``MAP_PRIVATE``, copy on write): TensorFlow may reuse an input tensor's buffer for
    an op's output (buffer forwarding), and a numpy user may write into a batch; either gets its own
    copy of the memory page it writes, and the cache file never changes (a read-only mapping crashed
    Keras ``fit`` with SIGSEGV). Pages are faulted in on first touch: ``MADV_POPULATE_READ`` up
    front was no faster. A mapping lives as long as an array (or a tensor) refers to it and is
    unmapped with the last one, so RSS holds only the pages in flight (a mapping's pages count in
    RSS while it lives, as a page array's would), and ``close()`` may remove the files while a page
    is in flight (the mapping keeps the file's pages until then). The file's size is checked before
    mapping: reading a mapping past the end of a file that was cut from outside would kill the
    process (SIGBUS) instead of raising ``CacheError``. A process may hold ``vm.max_map_count``
    mappings (65,530 by default) and a consumer that keeps every batch (``list(loader)``,
    ``ds.cache()``) keeps a mapping per page and field, so past :data:`MAX_LIVE_MAPPINGS` (a
    quarter of that, for the whole process) pages are read into new arrays: the same bytes, one copy more
    (a shuffled page's gather maps its range for a moment only, whatever the budget).
    """
    if not _MAPPINGS.take(always=transient):
        return _copied(fd, offset, size)
    try:
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(fd, offset + size - start, flags=mmap.MAP_PRIVATE,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    except BaseException:
        _MAPPINGS.give_back()
        raise
    weakref.finalize(mapping, _MAPPINGS.give_back)  # when the last array over it is gone, it is unmapped
    return np.frombuffer(mapping, dtype=np.uint8, count=size, offset=offset - start)


def _copied(fd: int, offset: int, size: int) -> np.ndarray:
    """The ``size`` bytes at ``offset`` of ``fd`` read into a new aligned uint8 array (the file holds them)."""
    out = empty_aligned(size, np.uint8)
    view, done = memoryview(out), 0
    while done < size:
        read = os.preadv(fd, [view[done:]], offset + done)
        if not read:
            raise CacheError(errno.EIO, f"dh_tf cache: a file ended {size - done} bytes early at offset {offset + done}")
        done += read
    return out


class _MappingCount:
    """The cache mappings alive in this process, against :data:`MAX_LIVE_MAPPINGS`. Any thread."""

    def __init__(self) -> None:
        self.live = 0
        self._lock = threading.RLock()  # reentrant: a finalizer may run give_back inside take's lock

    def take(self, always: bool = False) -> bool:
        """Counts one more mapping and returns True, or returns False when the budget is spent (unless ``always``)."""
        budget = _max_map_count() // 4 if MAX_LIVE_MAPPINGS is None else MAX_LIVE_MAPPINGS
        with self._lock:
            if self.live >= budget and not always:
                return False
            self.live += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.live -= 1


_MAPPINGS = _MappingCount()


@functools.cache
def _max_map_count() -> int:
    try:
        with open("/proc/sys/vm/max_map_count", encoding="ascii") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 65530  # Linux's default
