"""TableLoader: wires source, plan, pages, reader threads, cache and batching into numpy batches, one epoch per pass."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from dh_tf.checks import bool_arg, checked_keywords, int_arg
from dh_tf.errors import ArgumentError, UsageError
from dh_tf.reading import batching
from dh_tf.reading.epoch_cache import CachingPageReader, EpochCache, check_cache_arg
from dh_tf.reading.layout import ColumnSpec, Layout, build_layout
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.padding import PadTo, pad_options
from dh_tf.reading.page_size import default_page_rows, row_bytes
from dh_tf.reading.plan import ReadPlan
from dh_tf.reading.reader_threads import default_reader_threads, read_in_order
from dh_tf.reading.state import check_state, make_state
from dh_tf.sources import open_source

MIN_SHUFFLE_BLOCK_ROWS = 65536
"""The smallest shuffle block; see NOTE [ Shuffling by blocks ] in reading/plan.py."""
SHUFFLE_BLOCK_ROWS = 262144
"""The default shuffle block: 1 MiB of 4-byte values, the data page size pyarrow and most writers use.

A shuffled page reads its blocks, and the engine decodes whole Parquet data pages, so a block
smaller than a data page decodes the page for a fraction of it. Measured on the benchmark (20M x 16
float32, pyarrow-written, -Xmx1g, 2 reader threads), shuffled / unshuffled epoch 1: 0.84x with
65536-row blocks, 0.97x with 262144, 1.01x with 1048576 (benchmarks/results/second-wave). Bigger
blocks mix rows from fewer places per page; pass ``shuffle_block_rows=65536`` for more mixing."""
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
        features: a column name (an array ``[batch]``), a list of names (``[batch, k]``), or a dict
            of name -> name or list (a dict of arrays, for multi-input models). String columns give
            object arrays of ``str``; ``Instant`` / ``ZonedDateTime`` int64 nanoseconds, ``LocalDate``
            int32 days (NOTE [ Strings and timestamps ] in sources/column_types.py). A column of
            fixed-length arrays (``double[]``, ``DoubleVector``, ...) adds a dimension: ``[batch, n]``,
            a list of them ``[batch, n, k]`` (NOTE [ Array columns ] in reading/layout.py).
        label: like ``features``, or None to yield ``x`` alone.
        batch_size: rows per batch.
        page_rows: rows per page read from the engine (>= batch_size); default: about 32 MiB of
            output per page. At most ``prefetch + reader_threads`` pages exist at once.
        shuffle: shuffle rows each epoch (blocks of ``shuffle_block_rows``, then rows in a page).
        seed: the shuffle seed; None draws one (see ``loader.seed``).
        drop_remainder: drop the last batch of an epoch when it is partial.
        nulls: ``"error"`` (raise, naming column and row), ``"nan"`` (floating outputs only), a
            number to fill with, or a dict column -> one of those (other columns: ``"error"``); a
            String column takes ``"error"`` or a fill string, per column (``nulls={"Sym": "[UNK]"}``).
            A global ``"nan"`` fills the floating outputs and leaves integer outputs (an integer label,
            an integer ``dtype``) at ``"error"``: NaN does not exist there, so a null in one raises, saying
            so; give it a fill number (``nulls={"Label": -1}``) or a float ``label_dtype`` / ``dtype``. A
            per-column ``"nan"`` on an integer output is refused when the loader is built.
        sample_weight: a column of per-row weights; batches become ``(x, y, w)``.
        dtype: the dtype of features, weights and non-integer labels; or a dict input -> dtype for the
            features, keyed by a key of a dict ``features`` (the Keras input name) or a feature column,
            e.g. ``{"num": ["A", "B"], "cat": "CatCode"}`` with ``dtype={"cat": "int32"}`` keeps integer
            codes exact (float32 holds integers exactly only up to 2**24); the inputs it does not name,
            weights and non-integer labels get float32. A key that names no feature input or column is
            refused, as is a float column into an integer output (it would truncate).
        label_dtype: the dtype of labels; None keeps integer labels integer. A String label is refused
            (Keras cannot train on it): make integer codes with ``dh_tf.integer_codes``.
        prefetch: pages read ahead of the consumer; 0 with one reader thread reads inline.
        reader_threads: threads reading pages at once (NOTE [ Reader threads ] in reading/reader_threads.py);
            default :func:`default_reader_threads` (the usable CPU cores, at most 8).
        cache: False (default); True to keep the decoded epoch in a new directory under the user's
            cache directory (``$XDG_CACHE_HOME/dh_tf/epoch-cache``, else ``~/.cache/dh_tf/epoch-cache``);
            or a directory path (e.g. on a fast local disk) to create it in. Epochs after the first read
            the cache, not the table (NOTE [ Epoch cache ] in reading/epoch_cache.py). Static tables only. The
            constructor checks the room and creates nothing; the files are made when the first epoch
            starts (NOTE [ Cache directories ] in reading/cache_dir.py) and removed by :meth:`close` (or
            ``with TableLoader(...)``) or garbage collection.
        shuffle_block_rows: rows per shuffle block (>= 65536; default :data:`SHUFFLE_BLOCK_ROWS`,
            aligned to 1 MiB Parquet data pages).
        read_path: ``"auto"`` (the engine fast path when it works here, else public API),
            ``"engine"`` or ``"public"`` (NOTE [ Engine internals ] in sources/engine_read.py).
        num_shards: split each epoch between this many consumers (e.g. tf.distribute workers);
            each reads only its own part and all get the same number of batches; up to
            ``num_shards - 1`` rows per epoch are left out (NOTE [ Shards ] in reading/plan.py).
        shard_index: which shard this loader reads, in ``[0, num_shards)``.
        pad_to, padding, truncating, pad_value: None (fixed array lengths), or fit the rows of every
            array column (an int N) or of some (a dict column -> N) to N as ``keras.utils.pad_sequences``
            does, with its defaults ``"pre"``, ``"pre"``, ``0.0`` (NOTE [ Ragged arrays ] in sources/ragged.py).

    Raises:
        TypeError: ``table`` is not a Deephaven table, an argument has the wrong type (bools are not
            ints), a column's type is not supported, a list mixes String and other columns, a
            timestamp goes to a non-int64 output, or ``cache`` is asked for String columns.
        ValueError: an unknown column (the message lists the table's columns), an empty spec, a
            size out of range, a null policy that does not fit a column, ``cache`` on a
            refreshing table or in a directory that is not writable, or padding options that do
            not fit (``padding`` / ``truncating`` not ``"pre"`` / ``"post"``, ``pad_to`` < 1 or naming
            a column that is not an array column read).
        CacheSpaceError: the cache directory's disk cannot hold the cache, or it is tmpfs/ramfs and the
            cache exceeds ``MemAvailable`` (an ``OSError``); also when an epoch starts, if the disk filled meanwhile.

    Example:
        >>> loader = TableLoader(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=16)
        >>> for x, y in loader:  # x: float32 [16, 2], y: the Label column's integer type, [16]
        ...     ...

    Iterating is safe from any thread; two iterations may run at once (each has its own readers).
    """

    @checked_keywords("TableLoader")  # a misspelled keyword: ArgumentTypeError naming the closest names
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
        shuffle_block_rows: int = SHUFFLE_BLOCK_ROWS,
        read_path: str = "auto",
        num_shards: int = 1,
        shard_index: int = 0,
        pad_to: PadTo | None = None,
        padding: str = "pre",
        truncating: str = "pre",
        pad_value: float = 0.0,
    ) -> None:
        where = type(self).__name__
        self.batch_size = int_arg(batch_size, "batch_size", where, minimum=1)
        self.shuffle = bool_arg(shuffle, "shuffle", where)
        self.drop_remainder = bool_arg(drop_remainder, "drop_remainder", where)
        self.prefetch = int_arg(prefetch, "prefetch", where, minimum=0)
        self.reader_threads = (
            default_reader_threads()
            if reader_threads is None
            else int_arg(reader_threads, "reader_threads", where, minimum=1)
        )
        self.shuffle_block_rows = int_arg(
            shuffle_block_rows, "shuffle_block_rows", where, minimum=MIN_SHUFFLE_BLOCK_ROWS
        )
        cache_parent = check_cache_arg(cache, where)
        pad = pad_options(pad_to, padding, truncating, pad_value, where)
        num_shards = int_arg(num_shards, "num_shards", where, minimum=1)
        shard_index = int_arg(shard_index, "shard_index", where, minimum=0)
        if shard_index >= num_shards:
            raise ArgumentError(
                f"{where}: shard_index must be in [0, num_shards) (got shard_index={shard_index}, num_shards={num_shards})"
            )
        if seed is not None:
            seed = int_arg(seed, "seed", where, minimum=0)
        self.seed: int = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.source = open_source(table, where, read_path=read_path)
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
            pad=pad,
        )
        if page_rows is None:
            page_rows = default_page_rows(
                row_bytes(self.layout.fields, self.source), self.batch_size, page_mib=self.source.page_mib
            )
        else:
            page_rows = int_arg(page_rows, "page_rows", where, minimum=1)
            if page_rows < self.batch_size:
                raise ArgumentError(
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
                raise ArgumentError(
                    f"{where}: cache= needs a static table, but this table is refreshing (each epoch reads a "
                    "new snapshot); pass cache=False, or cache a static snapshot: table.snapshot()"
                )
            first, stop = self.plan.shard_span(self.source.num_rows())  # a shard caches its own rows only
            self._cache = EpochCache(cache_parent, self.layout, stop - first, where, first_row=first)
        self.table = table
        self._epoch_lock = threading.Lock()
        self._next_epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already delivered in it)
        self._closes = 0  # close() calls so far: an epoch checks that none came since it began
        self._progress = (0, 0)  # the consumer's position: (epoch, batches received), see state_dict

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
        """The directory of this loader's epoch cache files (made when the first epoch starts), or None without ``cache``."""
        return None if self._cache is None else self._cache.directory

    @property
    def resume_point(self) -> tuple[int, int] | None:
        """``(epoch, batches)`` loaded by :meth:`load_state_dict` and not yet started, or None."""
        return self._resume

    def __len__(self) -> int:
        """The number of batches in one epoch (of the table as it is now)."""
        return self.plan.num_batches(self.num_rows)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration epoch ``epoch`` (keeps a resume point loaded for that epoch)."""
        with self._epoch_lock:
            self._next_epoch = int_arg(epoch, "epoch", "TableLoader.set_epoch", minimum=0)
            self._progress = (self._next_epoch, self._resume[1] if self._resume and self._resume[0] == epoch else 0)

    def begin_epoch(self, *, peek: bool = False) -> tuple[int, int]:
        """Starts the next epoch for a consumer that reads it: ``(epoch, batches to skip)``.

        Records the consumer's position as ``(epoch, batches skipped)`` (NOTE [ Resuming an epoch ]);
        a resume point loaded for this epoch is used up. Pair it with :meth:`end_epoch`. With
        ``peek`` (Keras' first-batch build: NOTE [ Keras peeks ] in keras/keras_peek.py) it returns the
        same pair and changes nothing: the next epoch begun is that one again, from the same point.
        """
        with self._epoch_lock:
            epoch, skip_batches = self._next_epoch, 0
            if self._resume is not None and self._resume[0] == epoch:
                skip_batches = self._resume[1]
            if not peek:
                self._next_epoch = epoch + 1
                if skip_batches:
                    self._resume = None  # used up
                self._progress = (epoch, skip_batches)
            return epoch, skip_batches

    def end_epoch(self, epoch: int) -> None:
        """Records that ``epoch`` was handed over whole: the position becomes ``(epoch + 1, 0)``.

        Does nothing if the position moved to another epoch meanwhile (:meth:`set_epoch`).
        """
        with self._epoch_lock:
            if self._progress[0] == epoch:
                self._progress = (epoch + 1, 0)

    def state_dict(self, *, epoch: int | None = None, batches: int | None = None) -> dict[str, Any]:
        """A small JSON-serializable state from which :meth:`load_state_dict` resumes exactly.

        See NOTE [ Resuming an epoch ] in ``reading/state.py``.

        Args:
            epoch, batches: the position to record; by default the consumer's position as
                ``__iter__`` counts it (``(next epoch, 0)`` once an epoch ended, also after a pass
                through ``to_dataset``), or as last set by :meth:`set_epoch` / :meth:`load_state_dict`.

        Example:
            >>> json.dump(loader.state_dict(), open("state.json", "w"))
            >>> TableLoader(table, ..., seed=7).load_state_dict(json.load(open("state.json")))
        """
        if epoch is None or batches is None:
            with self._epoch_lock:
                epoch, batches = self._progress
        return make_state(self.plan, epoch, batches, self.num_rows)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Makes the next iteration resume from ``state`` (NOTE [ Resuming an epoch ]).

        Raises:
            ArgumentTypeError: ``state`` is not a dict.
            ArgumentError: the state is from a newer format, or was made for another order (table
                size, batch size, shuffle, shard; with shuffle also seed, page or block size); the
                message names each mismatch with both values.
        """
        epoch, batches = check_state(
            state,
            self.plan,
            self.num_rows,
            refreshing=self.source.is_refreshing,
            num_batches=len(self),
            where="TableLoader.load_state_dict",
        )
        with self._epoch_lock:
            self._next_epoch = epoch
            self._resume = (epoch, batches) if batches else None
            self._progress = (epoch, batches)

    def close(self) -> None:
        """Ends every epoch in progress and removes the epoch cache's files, if any.

        An epoch that began before ``close()`` raises :class:`~dh_tf.errors.UsageError` at its next
        page (NOTE [ Closing a cache in use ] in ``reading/epoch_cache.py``: no file is closed while a
        reader thread uses it); epochs begun afterwards read the table, without a cache. Safe to
        call twice, from any thread.
        """
        with self._epoch_lock:
            self._closes += 1
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def _check_open(self, closes: int) -> None:
        """Raises UsageError if :meth:`close` was called since an epoch that saw ``closes`` closes began."""
        if self._closes != closes:
            raise UsageError(
                f"TableLoader: the loader of columns {list(self.layout.columns)} was closed during an epoch; "
                "no page is read after close() (finish or break out of the epoch first, or build a new loader)"
            )

    def __enter__(self) -> TableLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        """Yields the batches of the next epoch: ``x``, ``(x, y)`` or ``(x, y, w)`` numpy arrays."""
        epoch, skip_batches = self.begin_epoch()
        delivered = skip_batches
        with contextlib.closing(self._groups(epoch, skip_batches)) as groups:
            for group in groups:
                for batch in batching.split_batches(group, self.batch_size):
                    delivered += 1  # counted as it is handed over: the consumer has it
                    with self._epoch_lock:
                        if self._progress[0] == epoch:
                            self._progress = (epoch, delivered)
                    yield self.layout.assemble(batch)
        self.end_epoch(epoch)

    def iter_groups(self, *, peek: bool = False) -> Iterator[Any]:
        """Yields the next epoch as *groups* of whole batches, assembled like batches.

        Each group but the last has a multiple of ``batch_size`` rows, so a consumer can cut it
        into batches itself (``to_dataset`` does this in TensorFlow's C++). The consumer counts
        delivered batches itself (NOTE [ Resuming an epoch ]). With ``peek`` the pass reads the next
        epoch without beginning it (:meth:`begin_epoch`).
        """
        epoch, skip_batches = self.begin_epoch(peek=peek)
        with contextlib.closing(self._groups(epoch, skip_batches)) as groups:
            for group in groups:
                yield self.layout.assemble(group)
        if not peek:
            self.end_epoch(epoch)  # the whole epoch was handed over (mid-epoch counts are the consumer's)

    def _groups(self, epoch: int, skip_batches: int) -> Iterator[list[np.ndarray]]:
        cache, closes = self._cache, self._closes
        if cache is not None:
            cache.create()  # the first epoch makes the files (NOTE [ Cache directories ])
        with self.source.open_epoch(self.layout.columns) as view:
            skip_rows = min(skip_batches * self.batch_size, self.plan.shard_rows(view.num_rows))
            pages = read_in_order(
                self.plan.pages(view.num_rows, epoch, skip_rows=skip_rows),
                lambda: CachingPageReader(
                    view, self.layout, self.source.column_types, cache, lambda: self._check_open(closes)
                ),
                reader_threads=self.reader_threads,
                prefetch=self.prefetch,
            )
            try:
                yield from batching.align_groups(pages, self.batch_size, self.drop_remainder)
            finally:
                pages.close()  # stops the reader threads now, not at garbage collection
