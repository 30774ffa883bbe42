"""TableLoader: wires source, plan, pages, reader threads, cache and batching into numpy batches, one epoch per pass."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from dh_tf import batching, source
from dh_tf.cache import CachingPageReader, EpochCache, check_cache_arg
from dh_tf.columns import ColumnSpec, Layout, NullPolicy, build_layout
from dh_tf.plan import ReadPlan
from dh_tf.prefetch import read_in_order

PAGE_MIB = 32
"""The default page size, in MiB of output arrays: large pages amortize every per-page cost."""
MIN_SHUFFLE_BLOCK_ROWS = 65536
"""The smallest shuffle block; see NOTE [ Shuffling by blocks ] in plan.py."""
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


class TableLoader:
    """Streams a Deephaven table into numpy ``(x, y[, w])`` batches, one epoch per iteration.

    The table is read in pages of ``page_rows`` rows by position, never whole, on ``reader_threads``
    threads; batches are slices of pages and only the last batch of an epoch is partial (NOTE [ Only
    the last batch is partial ]). Each ``iter(loader)`` is a new epoch: with ``shuffle`` the order is
    a pure function of ``(seed, epoch)``, whatever ``reader_threads`` is. A refreshing table is read
    from one snapshot per epoch (NOTE [ Refreshing tables ]). A table with zero rows gives an empty
    epoch (``len(loader) == 0``).

    Args:
        table: a ``deephaven.table.Table``, typically filtered / derived with DQL.
        features: a column name (an array ``[batch]``), a list of names (``[batch, n]``), or a dict
            of name -> name or list (a dict of arrays, for multi-input models).
        label: like ``features``, or None to yield ``x`` alone.
        batch_size: rows per batch.
        page_rows: rows per page read from the engine (>= batch_size); default: about 32 MiB of
            output per page. At most ``prefetch + reader_threads`` pages exist at once.
        shuffle: shuffle rows each epoch (blocks of ``shuffle_block_rows``, then rows in a page).
        seed: the shuffle seed; None draws one (see ``loader.seed``).
        drop_remainder: drop the last batch of an epoch when it is partial.
        nulls: ``"error"`` (raise, naming column and row), ``"nan"`` (floating outputs only), a
            number to fill with, or a dict column -> one of those (other columns: ``"error"``).
        sample_weight: a column of per-row weights; batches become ``(x, y, w)``.
        dtype: the dtype of features, weights and non-integer labels.
        label_dtype: the dtype of labels; None keeps integer labels integer.
        prefetch: pages read ahead of the consumer; 0 with one reader thread reads inline.
        reader_threads: threads reading pages at once (NOTE [ Reader threads ] in prefetch.py);
            default :func:`default_reader_threads` (the usable CPU cores, at most 8).
        cache: False (default); True to keep the decoded epoch in a new temporary directory; or a
            directory path (e.g. on a fast local disk) to create it in. Epochs after the first read
            the cache, not the table (NOTE [ Epoch cache ] in cache.py). Static tables only. The
            files are removed by :meth:`close` (or ``with TableLoader(...)``) or garbage collection.
        shuffle_block_rows: rows per shuffle block (>= 65536).
        read_path: ``"auto"`` (the engine fast path when it works here, else public API),
            ``"engine"`` or ``"public"`` (NOTE [ Engine internals ] in _engine_read.py).
        num_shards: split each epoch between this many consumers (e.g. tf.distribute workers);
            each reads only its own part and all get the same number of batches; up to
            ``num_shards - 1`` rows per epoch are left out (NOTE [ Shards ] in plan.py).
        shard_index: which shard this loader reads, in ``[0, num_shards)``.

    Raises:
        TypeError: ``table`` is not a Deephaven table, an argument has the wrong type (bools are not
            ints), or a column is not numeric or boolean.
        ValueError: an unknown column (the message lists the table's columns), an empty spec, a
            size out of range, a null policy that does not fit a column, or ``cache`` on a
            refreshing table or in a directory that is not writable.
        CacheSpaceError: the cache directory's disk cannot hold the cache (an ``OSError``).

    Example:
        >>> loader = TableLoader(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=16)
        >>> for x, y in loader:  # x: float32 [16, 2], y: the Label column's integer type, [16]
        ...     ...

    Iterating is safe from any thread; two iterations may run at once (each has its own readers).
    """

    def __init__(
        self,
        table: Any,
        features: ColumnSpec,
        label: ColumnSpec | None = None,
        *,
        batch_size: int = 32,
        page_rows: int | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        drop_remainder: bool = False,
        nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
        sample_weight: str | None = None,
        dtype: Any = "float32",
        label_dtype: Any = None,
        prefetch: int = 2,
        reader_threads: int | None = None,
        cache: bool | str | os.PathLike = False,
        shuffle_block_rows: int = MIN_SHUFFLE_BLOCK_ROWS,
        read_path: str = "auto",
        num_shards: int = 1,
        shard_index: int = 0,
    ) -> None:
        where = type(self).__name__
        self.batch_size = _int_arg(batch_size, "batch_size", where, minimum=1)
        self.shuffle = _bool_arg(shuffle, "shuffle", where)
        self.drop_remainder = _bool_arg(drop_remainder, "drop_remainder", where)
        self.prefetch = _int_arg(prefetch, "prefetch", where, minimum=0)
        self.reader_threads = (
            default_reader_threads()
            if reader_threads is None
            else _int_arg(reader_threads, "reader_threads", where, minimum=1)
        )
        self.shuffle_block_rows = _int_arg(
            shuffle_block_rows, "shuffle_block_rows", where, minimum=MIN_SHUFFLE_BLOCK_ROWS
        )
        cache_parent = check_cache_arg(cache, where)
        num_shards = _int_arg(num_shards, "num_shards", where, minimum=1)
        shard_index = _int_arg(shard_index, "shard_index", where, minimum=0)
        if shard_index >= num_shards:
            raise ValueError(
                f"{where}: shard_index must be in [0, num_shards) (got shard_index={shard_index}, num_shards={num_shards})"
            )
        if seed is not None:
            seed = _int_arg(seed, "seed", where, minimum=0)
        self.seed: int = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.source = source.open_source(table, where, read_path=read_path)
        self.read_path = read_path
        self.layout: Layout = build_layout(
            self.source.column_types,
            features,
            label,
            sample_weight,
            dtype=dtype,
            label_dtype=label_dtype,
            nulls=nulls,
            where=where,
        )
        if page_rows is None:
            page_rows = max(self.batch_size, _default_page_rows(self.layout))
        else:
            page_rows = _int_arg(page_rows, "page_rows", where, minimum=1)
            if page_rows < self.batch_size:
                raise ValueError(
                    f"{where}: page_rows must be >= batch_size (got page_rows={page_rows}, "
                    f"batch_size={self.batch_size})"
                )
        self.plan = ReadPlan(
            page_rows=page_rows,
            batch_size=self.batch_size,
            drop_remainder=self.drop_remainder,
            shuffle=self.shuffle,
            seed=self.seed,
            block_rows=self.shuffle_block_rows,
            num_shards=num_shards,
            shard_index=shard_index,
        )
        self._cache: EpochCache | None = None
        if cache_parent is not None:
            if self.source.is_refreshing:
                raise ValueError(
                    f"{where}: cache= needs a static table, but this table is refreshing (each epoch reads a "
                    "new snapshot); pass cache=False, or cache a static snapshot: table.snapshot()"
                )
            self._cache = EpochCache(cache_parent, self.layout, self.source.num_rows(), where)
        self.table = table
        self._epoch_lock = threading.Lock()
        self._next_epoch = 0

    @property
    def page_rows(self) -> int:
        """Rows per page."""
        return self.plan.page_rows

    @property
    def num_rows(self) -> int:
        """Rows in the table now (for a refreshing table, this can change between epochs)."""
        return self.source.num_rows()

    @property
    def cache_directory(self) -> str | None:
        """The directory holding this loader's epoch cache files, or None without ``cache``."""
        return None if self._cache is None else self._cache.directory

    def __len__(self) -> int:
        """The number of batches in one epoch (of the table as it is now)."""
        return self.plan.num_batches(self.num_rows)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration epoch ``epoch`` (for resuming a shuffled run)."""
        with self._epoch_lock:
            self._next_epoch = _int_arg(epoch, "epoch", "TableLoader.set_epoch", minimum=0)

    def _take_epoch(self) -> int:
        with self._epoch_lock:
            epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
            return epoch

    def close(self) -> None:
        """Removes the epoch cache's files, if any. Safe to call twice; the loader reads the table after."""
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def __enter__(self) -> TableLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        """Yields the batches of the next epoch: ``x``, ``(x, y)`` or ``(x, y, w)`` numpy arrays."""
        with contextlib.closing(self._groups()) as groups:
            for group in groups:
                for batch in batching.split_batches(group, self.batch_size):
                    yield self.layout.assemble(batch)

    def iter_groups(self) -> Iterator[Any]:
        """Yields the next epoch as *groups* of whole batches, assembled like batches.

        Each group but the last has a multiple of ``batch_size`` rows, so a consumer can cut it
        into batches itself (``to_dataset`` does this in TensorFlow's C++).
        """
        with contextlib.closing(self._groups()) as groups:
            for group in groups:
                yield self.layout.assemble(group)

    def _groups(self) -> Iterator[list[np.ndarray]]:
        epoch = self._take_epoch()
        cache = self._cache
        with self.source.open_epoch(self.layout.columns) as view:
            pages = read_in_order(
                self.plan.pages(view.num_rows, epoch),
                lambda: CachingPageReader(view, self.layout, self.source.column_types, cache),
                reader_threads=self.reader_threads,
                prefetch=self.prefetch,
            )
            try:
                yield from batching.align_groups(pages, self.batch_size, self.drop_remainder)
            finally:
                pages.close()  # stops the reader threads now, not at garbage collection


def _default_page_rows(layout: Layout) -> int:
    row_bytes = sum(field.dtype.itemsize * max(1, len(field.columns)) for field in layout.fields)
    rows = PAGE_MIB * 2**20 // row_bytes
    return int(min(max(rows // 65536 * 65536, 65536), 4 * 2**20))


def _int_arg(value: Any, name: str, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an int >= {minimum} (got {value!r} of type {type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum} (got {value!r})")
    return int(value)


def _bool_arg(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False (got {value!r} of type {type(value).__name__})")
    return bool(value)
