"""The decoded epoch cache: a static table's output arrays on local disk, read back without the JVM.

NOTE [ Epoch cache ]
The first epoch reads the source as usual and, on the reader threads, also writes each page's
output arrays (after null policy and casts, before the shuffle permutation) into one file per
field, each row at ``position * row_bytes``, so any span of positions is one contiguous file range.
A page's spans are marked *covered* only after all of its bytes are written; a page is served from
the cache only when all its spans are covered. So an epoch that stopped half-way (``break``, an
error) leaves a cache that is partly covered and never wrong: the next epoch reads the covered
pages from disk and the others from the source, filling them in. Later epochs (any shuffle) map the
file ranges of each page (NOTE [ Mapped cache reads ]): no JVM work and, unshuffled, no copy at all;
RSS stays bounded by the pages in flight.
Only static tables: a refreshing table changes between epochs. The loader owns the files: the
constructor only checks that they fit (NOTE [ Cache directories ] in ``reading/cache_dir.py``); they
are made when the first epoch starts, their whole size reserved then (``posix_fallocate``), so a
disk that filled meanwhile fails at once, with nothing left behind; ``close()`` or garbage
collection removes them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, CacheError, CacheSpaceError, UsageError
from dh_tf.reading.buffers import concatenate_rows, take_rows
from dh_tf.reading.cache_dir import (
    CACHE_PREFIX,
    SPACE_ERRNOS,
    CacheFiles,
    check_room,
    default_cache_root,
    existing_ancestor,
    free_bytes,
    space_error,
)
from dh_tf.reading.layout import Layout
from dh_tf.reading.mapping_budget import file_bytes
from dh_tf.reading.pages import PageReader, deliver
from dh_tf.reading.plan import PagePlan, page_positions
from dh_tf.sources.protocol import EpochView, Span


def check_cache_arg(cache: Any, where: str) -> str | None:
    """The directory in which to create the cache (None: no cache), from the ``cache=`` argument.

    ``True`` is :func:`~dh_tf.reading.cache_dir.default_cache_root`, read now; it is made when the
    first epoch starts. Nothing is created here.

    Raises:
        TypeError: ``cache`` is not a bool, a str or a path.
        ValueError: the directory does not exist, is not a directory, or is not writable (for
            ``True``: its nearest existing parent is not).
    """
    if cache is False:
        return None
    if cache is True:
        root = default_cache_root()
        if not os.access(existing_ancestor(root), os.W_OK | os.X_OK):
            raise ArgumentError(
                f"{where}: cache=True keeps the cache in {str(root)!r}, but {str(existing_ancestor(root))!r} is "
                "not writable; set XDG_CACHE_HOME or pass cache=<a writable directory>"
            )
        return str(root)
    if not isinstance(cache, (str, os.PathLike)) or isinstance(cache, bytes):
        raise ArgumentTypeError(
            f"{where}: cache must be False, True (the user cache directory) or a directory path "
            f"(got {cache!r} of type {type(cache).__name__})"
        )
    directory = Path(cache)
    if not directory.is_dir():
        raise ArgumentError(f"{where}: cache directory {str(directory)!r} does not exist or is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ArgumentError(f"{where}: cache directory {str(directory)!r} is not writable")
    return str(directory)


class EpochCache:
    """One file per field under a new directory in ``parent``, sized for the rows ``[first_row, first_row + num_rows)``.

    The constructor checks and creates nothing; :meth:`create` makes the files when the first epoch
    starts (NOTE [ Cache directories ] in ``reading/cache_dir.py``). Thread-safe: reader threads
    write and read disjoint or identical ranges concurrently. Closing is safe at any time, from any
    thread (NOTE [ Closing a cache in use ]).

    Raises:
        ArgumentTypeError: the layout reads String columns.
        CacheSpaceError: ``parent``'s file system has less room than the cache needs, or it is
            tmpfs/ramfs and the cache exceeds ``MemAvailable`` (the message names the directory
            and the bytes needed).
    """

    def __init__(self, parent: str, layout: Layout, num_rows: int, where: str, *, first_row: int = 0) -> None:
        strings = [c for field in layout.fields if field.dtype.kind == "O" for c in field.columns]
        if strings:  # Python objects have no fixed-size bytes to cache (NOTE [ Strings and timestamps ])
            raise ArgumentTypeError(
                f"{where}: cache= cannot hold String column(s) {strings}: they are read as Python str objects, "
                "which have no fixed size on disk; pass cache=False, or read integer codes instead (e.g. the "
                "column's rank in dh_tf.vocabulary(table, column), joined in DQL)"
            )
        self._row_bytes = [field.dtype.itemsize * int(np.prod(field.shape)) for field in layout.fields]
        self._fields = layout.fields
        self._columns = layout.columns
        self.num_rows = num_rows
        self.first_row = first_row
        self.nbytes = num_rows * sum(self._row_bytes)
        self._where = where
        self._parent = parent
        check_room(parent, self.nbytes, num_rows, where)
        self.directory = os.path.join(parent, f"{CACHE_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        """Where the files are made when the first epoch starts; it does not exist before."""
        self._files = CacheFiles()
        self._finalizer = weakref.finalize(self, self._files.remove)
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._covered: list[Span] = []
        self._users = 0
        self._closed = False

    def create(self) -> None:
        """Makes the directory and reserves the files; does nothing once they exist. Called as each epoch starts.

        Safe from any thread, two at once (one makes the files, the other waits). A failure
        leaves nothing behind, and the next call tries again.

        Raises:
            CacheSpaceError: no room for the files (the message names the directory and the bytes needed).
            CacheError: the directory or files cannot be made for another reason.
            UsageError: the cache was closed.
        """
        with self._in_use(), self._create_lock:  # in use: a close() meanwhile removes the files when this ends
            if self._files.directory is not None:
                return
            try:
                self._files.make(self.directory, [self.num_rows * row_bytes for row_bytes in self._row_bytes])
            except OSError as e:
                if e.errno in SPACE_ERRNOS:
                    raise self._space_error(e) from e
                raise CacheError(e.errno, f"{self._where}: cannot create the epoch cache {self.directory!r}: {e}") from e

    def _space_error(self, error: OSError) -> CacheSpaceError:
        free = free_bytes(self._parent)
        reason = f"free {free} bytes there, or pass cache=<a directory on a bigger disk> ({error.strerror})"
        return space_error(self._where, self._parent, self.nbytes, self.num_rows, reason, error.errno or errno.ENOSPC)

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        """Holds the files open while a read or write runs.

        NOTE [ Closing a cache in use ]
        ``close()`` may come while reader threads read or write (a ``with TableLoader(cache=True)``
        block left while tf.data still prefetches). It marks the cache closed; the files are removed
        at once if no read or write is running, else by the last one to finish, so no descriptor is
        closed (and its number reused by another ``open()``) while a thread uses it. A read or
        write that starts after ``close()`` raises :class:`~dh_tf.errors.UsageError`.
        """
        with self._lock:
            if self._closed:
                raise UsageError(
                    f"{self._where}: the loader of columns {list(self._columns)} was closed during an epoch; no page "
                    f"is read after close() (its epoch cache {self.directory!r} is removed)"
                )
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                last = self._closed and self._users == 0
            if last:
                self._finalizer()

    @property
    def paths(self) -> list[str]:
        """The file of each field, in layout order (rows at ``(position - first_row) * row_bytes``)."""
        return [os.path.join(self.directory, f"field{index}.bin") for index in range(len(self._row_bytes))]

    def covers(self, spans: Sequence[Span]) -> bool:
        """True when every row of ``spans`` has been written (and the cache is open)."""
        with self._lock:
            return not self._closed and all(_inside(span, self._covered) for span in spans)

    def write(self, spans: Sequence[Span], arrays: Sequence[np.ndarray]) -> None:
        """Writes the page's arrays (rows in read order of ``spans``), then marks the spans covered.

        Raises:
            UsageError: the cache was closed.
            CacheSpaceError: the file system has no room (as :meth:`create`).
        """
        with self._in_use():
            for fd, row_bytes, array in zip(self._files.fds, self._row_bytes, arrays):
                view = memoryview(np.ascontiguousarray(array)).cast("B")
                offset = 0
                for start, stop in spans:
                    size = (stop - start) * row_bytes
                    try:
                        _write_all(fd, view[offset : offset + size], (start - self.first_row) * row_bytes)
                    except OSError as e:  # a file system that could not reserve (no fallocate), or a file cut
                        if e.errno in SPACE_ERRNOS:
                            raise self._space_error(e) from e
                        raise
                    offset += size
            with self._lock:
                for span in spans:
                    self._covered = _add(self._covered, span)

    def read(self, spans: Sequence[Span]) -> list[np.ndarray]:
        """One array per field holding the rows of ``spans`` in read order (NOTE [ Mapped cache reads ]).

        Raises:
            UsageError: the cache was closed.
            CacheError: a file is shorter than the rows asked for (the cache was damaged from outside).
        """
        arrays = []
        with self._in_use():
            last_row = max((stop for _, stop in spans), default=self.first_row)
            for index, field in enumerate(self._fields):
                parts = [self._rows(index, start, stop, last_row) for start, stop in spans if stop > start]
                rows = parts[0] if len(parts) == 1 else concatenate_rows(parts) if parts else np.empty(0, np.uint8)
                arrays.append(rows.view(field.dtype).reshape(-1, *field.shape))
        return arrays

    def gather(self, positions: np.ndarray) -> list[np.ndarray]:
        """One new array per field holding the rows at table ``positions`` (all covered), in that order.

        Each field is one row gather straight from a mapping of the file range the positions lie in:
        a shuffled page is not first joined from its spans (NOTE [ Mapped cache reads ]).

        Raises:
            UsageError: the cache was closed.
            CacheError: a file is shorter than the rows asked for (the cache was damaged from outside).
        """
        if not len(positions):
            return self.read([])
        low, high = int(positions.min()), int(positions.max()) + 1
        offsets = positions - low  # the same row offsets for every field's mapping
        arrays = []
        with self._in_use():
            for index, field in enumerate(self._fields):
                rows = self._rows(index, low, high, high, transient=True)  # may span the table: never copied
                rows = rows.view(field.dtype).reshape(-1, *field.shape)
                arrays.append(take_rows(rows, offsets))
        return arrays

    def _rows(self, index: int, start: int, stop: int, last_row: int, *, transient: bool = False) -> np.ndarray:
        """Field ``index``'s bytes of table rows ``[start, stop)``, mapped, once its file holds ``last_row``'s.

        ``transient``: the caller drops the array at once, so it is mapped whatever the budget.
        """
        path, fd, row_bytes = self.paths[index], self._files.fds[index], self._row_bytes[index]
        end, size = (last_row - self.first_row) * row_bytes, os.fstat(fd).st_size
        if size < end:  # a mapping past the end would kill the process (SIGBUS) when read
            raise CacheError(errno.EIO, f"dh_tf cache: {path!r} holds {size} bytes, "
                                        f"fewer than the {end} its covered rows need")
        return file_bytes(fd, (start - self.first_row) * row_bytes, (stop - start) * row_bytes, transient)

    def close(self) -> None:
        """Closes and removes the cache files, now or when the last running read or write ends. Safe twice, any thread."""
        with self._lock:
            self._closed = True
            idle = self._users == 0
        if idle:
            self._finalizer()


class CachingPageReader:
    """A page reader for one thread: pages the cache covers come from disk, others from the source.

    Pages read from the source are written to the cache (NOTE [ Epoch cache ]). The source's span
    reader is opened only when a page is not covered, so a fully cached epoch does no JVM work.
    """

    def __init__(
        self,
        view: EpochView,
        layout: Layout,
        column_types: Any,
        cache: EpochCache | None,
        check_open: Callable[[], None] = lambda: None,
    ) -> None:
        self._check_open = check_open
        self._view = view
        self._layout = layout
        self._column_types = column_types
        self._cache = cache
        self._pages: PageReader | None = None

    def read(self, plan: PagePlan) -> list[np.ndarray]:
        """One array per field, rows in delivery order (as :meth:`PageReader.read`).

        Raises:
            UsageError: the loader was closed since the epoch began (``check_open``), or the cache was.
        """
        self._check_open()
        if self._cache is not None and self._cache.covers(plan.spans):
            if plan.permutation_seed is not None:
                return self._cache.gather(page_positions(plan))
            return deliver(self._cache.read(plan.spans), plan)
        if self._pages is None:
            self._pages = PageReader(self._view.open_reader(), self._layout, self._column_types)
        arrays = self._pages.read_spans(plan.spans)
        if self._cache is not None:
            self._cache.write(plan.spans, arrays)
        return deliver(arrays, plan)

    def cancel(self) -> None:
        """Ends a source read in flight, from another thread (NOTE [ Cancelling reads ])."""
        pages = self._pages
        if pages is not None:
            pages.cancel()

    def close(self) -> None:
        if self._pages is not None:
            self._pages.close()
            self._pages = None


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _inside(span: Span, covered: list[Span]) -> bool:
    start, stop = span
    return start >= stop or any(a <= start and stop <= b for a, b in covered)


def _add(covered: list[Span], span: Span) -> list[Span]:
    """``covered`` (sorted, disjoint, merged) with ``span`` added, still sorted and merged."""
    start, stop = span
    out = []
    for a, b in covered:
        if b < start or stop < a:
            out.append((a, b))
        else:
            start, stop = min(a, start), max(b, stop)
    out.append((start, stop))
    return sorted(out)
