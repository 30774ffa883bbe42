"""TableLoader: wires source, plan, pages, prefetch and batching into numpy batches, one epoch per pass."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from dh_tf import batching, plan, source
from dh_tf.columns import ColumnSpec, Layout, NullPolicy, build_layout
from dh_tf.pages import PageReader
from dh_tf.prefetch import prefetched

PAGE_MIB = 32
"""The default page size, in MiB of output arrays: large pages amortize every per-page cost."""
READ_PATHS = {"auto": None, "engine": True, "public": False}
"""read_path -> PageReader's ``fast`` argument (None: decide by ``_engine_read.available()``)."""
MIN_SHUFFLE_BLOCK_ROWS = 65536
"""The smallest shuffle block; see NOTE [ Shuffling by blocks ] in plan.py."""


class TableLoader:
    """Streams a Deephaven table into numpy ``(x, y[, w])`` batches, one epoch per iteration.

    The table is read in pages of ``page_rows`` rows by position, never whole; batches are slices
    of pages and only the last batch of an epoch is partial (NOTE [ Only the last batch is partial ]).
    Each ``iter(loader)`` is a new epoch: with ``shuffle`` the order is a pure function of
    ``(seed, epoch)``. A refreshing table is read from one snapshot per epoch (NOTE [ Refreshing
    tables ]). A table with zero rows gives an empty epoch (``len(loader) == 0``).

    Args:
        table: a ``deephaven.table.Table``, typically filtered / derived with DQL.
        features: a column name (an array ``[batch]``), a list of names (``[batch, n]``), or a dict
            of name -> name or list (a dict of arrays, for multi-input models).
        label: like ``features``, or None to yield ``x`` alone.
        batch_size: rows per batch.
        page_rows: rows per page read from the engine; default: about 32 MiB of output per page.
        shuffle: shuffle rows each epoch (blocks of ``shuffle_block_rows``, then rows in a page).
        seed: the shuffle seed; None draws one (see ``loader.seed``).
        drop_remainder: drop the last batch of an epoch when it is partial.
        nulls: ``"error"`` (raise, naming column and row), ``"nan"`` (floating outputs only), a
            number to fill with, or a dict column -> one of those (other columns: ``"error"``).
        sample_weight: a column of per-row weights; batches become ``(x, y, w)``.
        dtype: the dtype of features, weights and non-integer labels.
        label_dtype: the dtype of labels; None keeps integer labels integer.
        prefetch: pages read ahead on a background thread; 0 reads inline.
        shuffle_block_rows: rows per shuffle block (>= 65536).
        read_path: ``"auto"`` (the engine fast path when it works here, else public API),
            ``"engine"`` or ``"public"`` (NOTE [ Engine internals ] in _engine_read.py).

    Raises:
        TypeError: ``table`` is not a Deephaven table, an argument has the wrong type (bools are not
            ints), or a column is not numeric or boolean.
        ValueError: an unknown column (the message lists the table's columns), an empty spec, a
            size out of range, or a null policy that does not fit a column.

    Example:
        >>> loader = TableLoader(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=16)
        >>> for x, y in loader:  # x: float32 [16, 2], y: the Label column's integer type, [16]
        ...     ...

    Iterating is safe from any thread; two iterations may run at once (each has its own reader).
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
        shuffle_block_rows: int = MIN_SHUFFLE_BLOCK_ROWS,
        read_path: str = "auto",
    ) -> None:
        where = type(self).__name__
        source.check_table(table, where)
        self.batch_size = _int_arg(batch_size, "batch_size", where, minimum=1)
        self.shuffle = _bool_arg(shuffle, "shuffle", where)
        self.drop_remainder = _bool_arg(drop_remainder, "drop_remainder", where)
        self.prefetch = _int_arg(prefetch, "prefetch", where, minimum=0)
        self.shuffle_block_rows = _int_arg(
            shuffle_block_rows, "shuffle_block_rows", where, minimum=MIN_SHUFFLE_BLOCK_ROWS
        )
        if read_path not in READ_PATHS:
            raise ValueError(f"{where}: read_path must be one of {list(READ_PATHS)} (got {read_path!r})")
        self.read_path = read_path
        if seed is not None:
            seed = _int_arg(seed, "seed", where, minimum=0)
        self.seed: int = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.layout: Layout = build_layout(
            source.column_types(table),
            features,
            label,
            sample_weight,
            dtype=dtype,
            label_dtype=label_dtype,
            nulls=nulls,
            where=where,
        )
        if page_rows is None:
            self.page_rows = max(self.batch_size, _default_page_rows(self.layout))
        else:
            self.page_rows = _int_arg(page_rows, "page_rows", where, minimum=1)
            if self.page_rows < self.batch_size:
                raise ValueError(
                    f"{where}: page_rows must be >= batch_size (got page_rows={self.page_rows}, "
                    f"batch_size={self.batch_size})"
                )
        self.table = table
        self._exec_ctx = source.current_exec_ctx()
        self._epoch_lock = threading.Lock()
        self._next_epoch = 0

    @property
    def num_rows(self) -> int:
        """Rows in the table now (for a refreshing table, this can change between epochs)."""
        return int(self.table.size)

    def __len__(self) -> int:
        """The number of batches in one epoch (of the table as it is now)."""
        return batching.num_batches(self.num_rows, self.batch_size, self.drop_remainder)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration epoch ``epoch`` (for resuming a shuffled run)."""
        with self._epoch_lock:
            self._next_epoch = _int_arg(epoch, "epoch", "TableLoader.set_epoch", minimum=0)

    def _take_epoch(self) -> int:
        with self._epoch_lock:
            epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
            return epoch

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
        pages = prefetched(lambda: self._read_pages(epoch), self.prefetch)
        try:
            yield from batching.align_groups(pages, self.batch_size, self.drop_remainder)
        finally:
            pages.close()  # stops the prefetch thread now, not at garbage collection

    def _read_pages(self, epoch: int) -> Iterator[list[np.ndarray]]:
        with source.epoch_table(self.table, self.layout.columns, self._exec_ctx) as table:
            plans = plan.plan_epoch(
                int(table.size),
                self.page_rows,
                shuffle=self.shuffle,
                seed=self.seed,
                epoch=epoch,
                block_rows=self.shuffle_block_rows,
            )
            if not plans:
                return
            reader = PageReader(table, self.layout, exec_ctx=self._exec_ctx, fast=READ_PATHS[self.read_path])
            try:
                for page in plans:
                    yield reader.read(page)
            finally:
                reader.close()


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
