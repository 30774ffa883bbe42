"""Cached epochs read by TensorFlow's C++: no Python call per page once the epoch cache is full.

NOTE [ Native cached epochs ]
A pass over ``to_dataset(..., cache=...)`` runs one Python generator (:func:`passes`). When the
loader's epoch cache covers every row of its shard (NOTE [ Epoch cache ] in reading/epoch_cache.py;
the first epoch fills it), the generator takes the loader's next epoch and yields ONE element: the
epoch's plan as small tensors (:func:`epoch_plan`): each page's spans as rows of the cache files,
and, with shuffle, the in-page permutation after the rows to skip (NOTE [ Skipped rows ] in
reading/plan.py), computed in numpy from the same :class:`~dh_tf.reading.plan.ReadPlan` the loader
uses, so the rows, their order and the batches are exactly those of the uncached epoch. TensorFlow
then reads each span as one record of ``tf.data.FixedLengthRecordDataset`` (``header_bytes`` = its
offset), decodes a page with ``tf.io.decode_raw``, gathers its rows into delivery order, reads
``reader_threads`` pages at once (a deterministic parallel ``interleave``) and cuts batches with
``Dataset.rebatch`` (rows left at a page's end are carried into the next batch: only the last batch
of the epoch is partial, NOTE [ Only the last batch is partial ]). Otherwise (cache not full: the
first epoch, or one after an interrupted first epoch; or no cache) the generator yields the
loader's groups as before, and the element's plan is empty. The loader's epoch count and progress
advance as :meth:`TableLoader.iter_groups` advances them: at the start of the pass, and at its end
(when tf.data asks the generator for the element after the last one).

tf.data opens the files itself and closes each when its record is read (and all of them when the
iterator is released), so ``loader.close()`` removes them as before; a pass already running when
``close()`` comes fails with a TensorFlow ``NotFoundError`` at its next page, where the numpy path
raises :class:`~dh_tf.errors.UsageError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dh_tf.reading.loader import TableLoader
from dh_tf.reading.plan import page_permutation

NATIVE_DTYPES = frozenset(np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                                 "uint8", "uint16", "bool", "complex64", "complex128"))
"""The field dtypes ``tf.io.decode_raw`` decodes; a layout with another dtype keeps the generator path."""
PLAN_KEYS = ("span_rows", "page_spans", "permutation", "page_delivered")


def plan_signature(tf: Any) -> tuple[Any, ...]:
    """The ``tf.TensorSpec`` of the plan part of a generator element (see :func:`epoch_plan`)."""
    return tuple(tf.TensorSpec(shape, tf.int64) for shape in ((None, 2), (None,), (None,), (None,)))


def empty_plan() -> tuple[np.ndarray, ...]:
    """The plan of an element that carries a group (no pages)."""
    return np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)


def epoch_plan(loader: TableLoader, num_rows: int, epoch: int, skip_rows: int, first_row: int) -> tuple[np.ndarray, ...]:
    """One epoch's pages as rows of the cache files, and the order in which to deliver them.

    Returns four int64 arrays: ``span_rows`` ``[S, 2]`` (first row in the files, rows) of every
    page's spans, page after page, in read order; ``page_spans`` ``[P]``: spans per page;
    ``permutation``: with shuffle, each page's in-page order after its skipped rows, concatenated
    (empty without shuffle, where skipped rows are left out of the spans instead); ``page_delivered``
    ``[P]``: rows each page delivers.
    """
    spans: list[tuple[int, int]] = []
    page_spans, permutations, delivered = [], [], []
    for page in loader.plan.pages(num_rows, epoch, skip_rows=skip_rows):
        permutation = page_permutation(page)
        if permutation is None:  # in order: drop the skipped rows from the first span instead
            skip, count = page.skip_rows, 0
            for start, stop in page.spans:
                start += min(skip, stop - start)
                skip -= min(skip, stop - start)
                if start < stop:
                    spans.append((start - first_row, stop - start))
                    count += 1
            page_spans.append(count)
        else:
            spans.extend((start - first_row, stop - start) for start, stop in page.spans)
            page_spans.append(len(page.spans))
            permutations.append(permutation[page.skip_rows :])
        delivered.append(page.num_delivered)
    return (
        np.array(spans, np.int64).reshape(-1, 2),
        np.array(page_spans, np.int64),
        np.concatenate(permutations).astype(np.int64) if permutations else np.zeros(0, np.int64),
        np.array(delivered, np.int64),
    )


def native_capable(loader: TableLoader) -> bool:
    """True when the loader's epochs can come from its cache through TensorFlow: it has a cache and every dtype decodes."""
    return loader.cache is not None and all(field.dtype in NATIVE_DTYPES for field in loader.layout.fields)


def passes(loader: TableLoader) -> Iterator[tuple[Any, tuple[np.ndarray, ...]]]:
    """One pass: the loader's next epoch as ``(group, plan)`` elements (NOTE [ Native cached epochs ]).

    Either one element with an empty group and the epoch's plan (the cache is full), or the
    loader's groups (:meth:`TableLoader.iter_groups`) each with an empty plan.
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


def native_batches(loader: TableLoader, plan: tuple[Any, ...], tf: Any) -> Any:
    """The batches of one epoch read from the cache files by TensorFlow (a traced function of ``plan``).

    An empty plan gives an empty dataset. ``loader`` (which must be :func:`native_capable`) gives
    only constants, read when the dataset is built: files, row sizes, dtypes.
    """
    cache = loader.cache
    files = _Files(cache.paths, cache.row_bytes, cache.num_rows, loader.layout.fields, tf)
    if loader.plan.shuffle:
        batches = _shuffled(files, plan, loader.reader_threads, tf)
        batches = batches.rebatch(loader.batch_size, drop_remainder=loader.drop_remainder)
    else:
        batches = _in_order(files, plan, loader.batch_size, loader.drop_remainder, loader.reader_threads, tf)
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


def _in_order(files: _Files, plan: tuple[Any, ...], batch_size: int, drop_remainder: bool, threads: int, tf: Any) -> Any:
    """An unshuffled epoch: the plan's rows are one run of the files; each batch is one record."""
    span_rows = plan[0]
    start = tf.reduce_min(tf.concat([span_rows[:, 0], [files.num_rows]], 0))  # an empty plan reads no record
    rows = tf.reduce_sum(span_rows[:, 1])
    whole = rows // batch_size * batch_size
    tail = rows - whole if not drop_remainder else tf.constant(0, tf.int64)

    def field(index: int) -> Any:  # an empty body (no whole batch, no tail) has no records
        full = files.records(index, start, whole, batch_size)
        return full.concatenate(files.records(index, start + whole, tail, tf.maximum(tail, 1)))

    fields = tf.data.Dataset.zip(tuple(field(i) for i in range(len(files.fields))))
    decode = lambda *records: tuple(files.decode(i, r) for i, r in enumerate(records))  # noqa: E731
    batches = fields.map(decode, num_parallel_calls=max(2, threads), deterministic=True)
    if drop_remainder:
        batches = batches.map(lambda *a: tuple(tf.ensure_shape(t, [batch_size, *t.shape[1:]]) for t in a))
    return batches


def _shuffled(files: _Files, plan: tuple[Any, ...], threads: int, tf: Any) -> Any:
    """A shuffled epoch as pages in delivery order: each page's spans read, joined and gathered."""
    span_rows, page_spans, permutation, page_delivered = plan
    span_bounds = tf.concat([[0], tf.cumsum(page_spans)], 0)
    perm_bounds = tf.concat([[0], tf.cumsum(page_delivered)], 0)

    def read_field(index: int, first: Any, last: Any) -> Any:
        def read_span(span: Any) -> Any:
            return files.records(index, span_rows[span, 0], span_rows[span, 1], span_rows[span, 1])

        spans = tf.data.Dataset.range(first, last).flat_map(read_span).batch(2**31 - 1)
        return spans.map(lambda parts: files.decode(index, tf.strings.reduce_join(parts)))

    def page(index: Any) -> Any:
        first, last = span_bounds[index], span_bounds[index + 1]
        order = permutation[perm_bounds[index] : perm_bounds[index + 1]]
        arrays = tf.data.Dataset.zip(tuple(read_field(i, first, last) for i in range(len(files.fields))))
        return arrays.map(lambda *a: tuple(tf.gather(t, order) for t in a))

    pages = tf.data.Dataset.range(tf.size(page_spans, out_type=tf.int64))
    return pages.interleave(page, cycle_length=threads, block_length=1, num_parallel_calls=threads, deterministic=True)
