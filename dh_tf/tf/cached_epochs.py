"""Cached epochs read by TensorFlow's C++: no Python call per page once the epoch cache is full.

NOTE [ Native cached epochs ]
A pass over ``to_dataset(..., cache=...)`` without shuffle runs one Python generator
(:func:`passes`). When the loader's epoch cache covers every row of its shard (NOTE [ Epoch cache ]
in reading/epoch_cache.py; the first epoch fills it), the generator takes the loader's next epoch
and yields ONE element: the epoch's rows as spans of the cache files (:func:`epoch_plan`, from the
same :class:`~dh_tf.reading.plan.ReadPlan` the loader uses, skipped rows left out: NOTE [ Skipped
rows ] in reading/plan.py). The rows of an unshuffled epoch are one run of the files, so
TensorFlow reads them as ``tf.data.FixedLengthRecordDataset`` records of exactly one batch
(``header_bytes`` = the run's offset; the last, partial batch is a record of its own), decodes each
with ``tf.io.decode_raw`` on ``reader_threads`` threads (a deterministic parallel ``map``), and
the batches are those of the uncached epoch, byte for byte. Otherwise (cache not full: the first
epoch, or one after an interrupted first epoch) the generator yields the loader's groups as before,
and the element's spans are empty. The loader's epoch count and progress advance as
:meth:`TableLoader.iter_groups` advances them: at the start of the pass, and at its end (when
tf.data asks the generator for the element after the last one).

Shuffled epochs keep the generator path (reader threads ``preadv`` the pages and ``np.take`` them
into the seeded order). A C++ path for them (each page's spans read as records, joined, decoded,
``tf.gather``-ed into the permutation in a parallel ``interleave``, then ``rebatch``) delivered the
same batches but ran at 0.3-0.5x the generator path on the 2-core development machine (5M x 16
float32, interleaved passes): it copies each page five times (read buffer, record, join, decode,
gather) where the generator path copies it twice.

tf.data opens the files itself and closes each when its records are read (and all of them when the
iterator is released), so ``loader.close()`` removes them as before; a pass already running when
``close()`` comes fails with a TensorFlow ``NotFoundError`` at its next record, where the numpy path
raises :class:`~dh_tf.errors.UsageError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dh_tf.reading.loader import TableLoader

NATIVE_DTYPES = frozenset(np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                                 "uint8", "uint16", "bool", "complex64", "complex128"))
"""The field dtypes ``tf.io.decode_raw`` decodes; a layout with another dtype keeps the generator path."""


def plan_signature(tf: Any) -> Any:
    """The ``tf.TensorSpec`` of the plan part of a generator element: spans ``[S, 2]`` (see :func:`epoch_plan`)."""
    return tf.TensorSpec((None, 2), tf.int64)


def empty_plan() -> np.ndarray:
    """The plan of an element that carries a group (no spans)."""
    return np.zeros((0, 2), np.int64)


def epoch_plan(loader: TableLoader, num_rows: int, epoch: int, skip_rows: int, first_row: int) -> np.ndarray:
    """One unshuffled epoch's rows as ``[S, 2]`` int64 spans (first row in the cache files, rows), in order.

    The rows to skip (a resumed epoch) are left out of the first spans.
    """
    spans: list[tuple[int, int]] = []
    for page in loader.plan.pages(num_rows, epoch, skip_rows=skip_rows):
        skip = page.skip_rows
        for start, stop in page.spans:
            cut = min(skip, stop - start)
            start, skip = start + cut, skip - cut
            if start < stop:
                spans.append((start - first_row, stop - start))
    return np.array(spans, np.int64).reshape(-1, 2)


def native_capable(loader: TableLoader) -> bool:
    """True when the loader's epochs can come from its cache through TensorFlow: a cache, no shuffle, dtypes that decode."""
    return (
        loader.cache is not None
        and not loader.plan.shuffle
        and all(field.dtype in NATIVE_DTYPES for field in loader.layout.fields)
    )


def passes(loader: TableLoader) -> Iterator[tuple[Any, np.ndarray]]:
    """One pass: the loader's next epoch as ``(group, plan)`` elements (NOTE [ Native cached epochs ]).

    Either one element with an empty group and the epoch's spans (the cache is full), or the
    loader's groups (:meth:`TableLoader.iter_groups`) each with no spans.
    """
    cache = loader.full_cache()
    if cache is None:
        empty = empty_plan()
        for group in loader.iter_groups():
            yield group, empty
        return
    epoch, skip_batches = loader.begin_epoch()
    num_rows = loader.num_rows
    skip_rows = min(skip_batches * loader.batch_size, loader.plan.shard_rows(num_rows))
    no_rows = loader.layout.assemble([np.zeros((0, *f.shape), f.dtype) for f in loader.layout.fields])
    yield no_rows, epoch_plan(loader, num_rows, epoch, skip_rows, cache.first_row)
    loader.end_epoch(epoch)  # tf.data asked for the element after the whole epoch


def native_batches(loader: TableLoader, spans: Any, tf: Any) -> Any:
    """The batches of one epoch read from the cache files by TensorFlow (a traced function of ``spans``).

    No spans give an empty dataset. ``loader`` (which must be :func:`native_capable`) gives only
    constants, read when the dataset is built: files, row sizes, dtypes, batch size.
    """
    cache = loader.cache
    files = _Files(cache.paths, cache.row_bytes, cache.num_rows, loader.layout.fields, tf)
    batches = _in_order(files, spans, loader.batch_size, loader.drop_remainder, loader.reader_threads, tf)
    return batches.map(lambda *arrays: loader.layout.assemble(list(arrays)))


class _Files:
    """The cache files as TensorFlow reads them: ``rows(field, start, count, record_rows)`` datasets."""

    def __init__(self, paths: list[str], row_bytes: list[int], num_rows: int, fields: Any, tf: Any) -> None:
        self.paths, self.row_bytes, self.num_rows, self.fields, self.tf = paths, row_bytes, num_rows, fields, tf

    def records(self, index: int, start: Any, rows: Any, record_rows: Any) -> Any:
        """Rows ``[start, start + rows)`` of field ``index`` as records of ``record_rows`` rows (which divides ``rows``).

        The body (file minus header and footer) must be a whole number of records, so the footer
        is the rest of the file.
        """
        size = self.row_bytes[index]
        return self.tf.data.FixedLengthRecordDataset(
            self.paths[index], record_rows * size, header_bytes=start * size,
            footer_bytes=(self.num_rows - start - rows) * size, buffer_size=1 << 20,
        )

    def decode(self, index: int, record: Any) -> Any:
        """A record's bytes as ``[rows, *field.shape]`` of the field's dtype."""
        field = self.fields[index]
        return self.tf.reshape(self.tf.io.decode_raw(record, self.tf.as_dtype(field.dtype)), [-1, *field.shape])


def _in_order(files: _Files, span_rows: Any, batch_size: int, drop_remainder: bool, threads: int, tf: Any) -> Any:
    """An unshuffled epoch: the spans are one run of the files; each batch is one record."""
    start = tf.reduce_min(tf.concat([span_rows[:, 0], [files.num_rows]], 0))
    rows = tf.reduce_sum(span_rows[:, 1])
    whole = rows // batch_size * batch_size
    tail = rows - whole if not drop_remainder else tf.constant(0, tf.int64)

    def field(index: int) -> Any:  # an empty body (no whole batch, no tail) has no records
        full = files.records(index, start, whole, batch_size)
        return full.concatenate(files.records(index, start + whole, tail, tf.maximum(tail, 1)))

    def read(_: Any) -> Any:
        fields = tf.data.Dataset.zip(tuple(field(i) for i in range(len(files.fields))))
        decode = lambda *records: tuple(files.decode(i, r) for i, r in enumerate(records))  # noqa: E731
        batches = fields.map(decode, num_parallel_calls=max(2, threads), deterministic=True)
        if drop_remainder:
            batches = batches.map(lambda *a: tuple(tf.ensure_shape(t, [batch_size, *t.shape[1:]]) for t in a))
        return batches

    # No spans (a generator-read epoch, maybe after close() removed the files): open no file.
    return tf.data.Dataset.range(tf.minimum(tf.shape(span_rows, out_type=tf.int64)[0], 1)).flat_map(read)
