"""Read one page (the rows of a :class:`~dh_tf.reading.plan.PagePlan`) into C-ordered numpy arrays.

The page reader asks a source's span reader (NOTE [ Sources ] in sources/protocol.py) for each needed column
once, into a native-typed scratch array with a null mask, applies the null policy of each column,
casts into one output array per :class:`~dh_tf.reading.layout.Field`, and finally applies the page's row
permutation and skip (:func:`deliver`). It never sees a table. An array column's scratch array is
``[rows, n]`` and its mask marks null elements (NOTE [ Array columns ] in reading/layout.py); a padded
one also comes with each row's kept length, and gets its pad values here (NOTE [ Ragged arrays ]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import NullValueError
from dh_tf.reading.buffers import empty_aligned, take_rows
from dh_tf.reading.layout import Field, Layout
from dh_tf.reading.plan import PagePlan, page_permutation, read_positions
from dh_tf.sources.column_types import column_kind
from dh_tf.sources.protocol import Span, SpanReader
from dh_tf.sources.ragged import PaddedColumn, pad_mask


class PageReader:
    """Reads pages through one span reader for one layout.

    Not thread-safe: use one reader per thread, and ``close()`` it on that thread (closing twice is
    safe; it closes the span reader).
    """

    def __init__(self, spans: SpanReader, layout: Layout, column_types: Mapping[str, str]) -> None:
        self._spans = spans
        self._layout = layout
        self._dtypes = {name: column_kind(column_types[name]).dtype for name in layout.columns}
        self._types = {name: column_types[name] for name in layout.columns}
        self._lengths = layout.array_lengths
        self._padding = layout.padding
        self._scratch: dict[str, np.ndarray] = {}

    def read(self, plan: PagePlan) -> list[np.ndarray]:
        """Returns one new C-ordered, aligned array per field (NOTE [ Aligned page arrays ]), rows in delivery order.

        Raises:
            NullValueError: a column with null policy ``"error"`` holds a null; the message names
                the column and the row's position in the table.
        """
        return deliver(self.read_spans(plan.spans), plan)

    def read_spans(self, spans: Sequence[Span]) -> list[np.ndarray]:
        """One new array per field with the rows of ``spans`` in read order (no permutation).

        Raises:
            NullValueError: as :meth:`read`.
        """
        rows = sum(stop - start for start, stop in spans)
        arrays = [empty_aligned((rows, *field.shape), field.dtype) for field in self._layout.fields]
        in_place = self._in_place(arrays)
        native = {
            name: in_place[name] if name in in_place else self._scratch_array(name, dtype, rows)
            for name, dtype in self._dtypes.items()
        }
        if self._padding:  # only sources with array columns take padded= (NOTE [ Sources ])
            padded = {c: PaddedColumn(p, np.empty(rows, dtype=np.int32)) for c, p in self._padding.items()}
            masks = self._spans.read(spans, native, padded=padded)  # type: ignore[call-arg]
        else:
            masks = self._spans.read(spans, native)
        for field, out in zip(self._layout.fields, arrays):
            cast_columns(out, field, native, in_place)
            for index, (column, policy) in enumerate(zip(field.columns, field.nulls)):
                target = out if field.squeeze else out[..., index]
                fix = field.null_fixes[index] if field.null_fixes else "nulls='error'"  # what was passed, what fits
                if field.padding is not None and policy == "error":
                    self._check_null_arrays(padded[column].lengths, masks[column], column, fix, spans)
                if masks[column] is not None:
                    self._apply_nulls(masks[column], column, policy, fix, target, spans)
                if field.padding is not None:
                    self._pad(padded[column].lengths, field, target)
        return arrays

    def _in_place(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The columns the span reader writes straight into their slot of a field's output: NOTE [ Filling outputs in place ].

        NOTE [ Filling outputs in place ]
        A span reader with ``fills_strided = True`` (the remote one) may be given, as a column's ``out``,
        the column's slot of its field's output (``out[..., index]``, a strided view) instead of a
        contiguous scratch array: this skips one copy of the page, and the reader's writes, one Arrow
        record batch (<= 64K rows) at a time for every column, stay in cache. Only for a plain numeric
        column read into exactly one slot of a field of its own dtype (no cast to do); nulls are then
        applied in that slot as usual. The engine reader fills contiguous arrays only.
        """
        if not getattr(self._spans, "fills_strided", False) or self._padding:
            return {}
        uses = Counter(column for field in self._layout.fields for column in field.columns)
        slots = {}
        for field, out in zip(self._layout.fields, arrays):
            for index, column in enumerate(field.columns):
                same = self._dtypes[column] == field.dtype and field.dtype.kind in "biuf"
                if same and uses[column] == 1 and field.array_length is None and column not in self._lengths:
                    slots[column] = out if field.squeeze else out[..., index]
        return slots

    def _scratch_array(self, name: str, dtype: np.dtype, rows: int) -> np.ndarray:
        scratch = self._scratch.get(name)
        if scratch is None or len(scratch) < rows:
            length = self._lengths.get(name)
            scratch = self._scratch[name] = np.empty((rows,) if length is None else (rows, length), dtype=dtype)
        return scratch[:rows]

    def _apply_nulls(
        self, nulls: np.ndarray, column: str, policy: Any, fix: str, target: np.ndarray, spans: Sequence[Span]
    ) -> None:
        if policy == "error":
            rows = nulls if nulls.ndim == 1 else nulls.any(axis=1)
            row = int(np.argmax(rows))
            first = int(read_positions(PagePlan(tuple(spans)))[row])
            what, drop = "a null", f"drop such rows with DQL: table.where('!isNull({column})')"
            if nulls.ndim == 2:
                count = int(nulls[row].sum())
                if count == nulls.shape[1]:
                    what = f"a null array (or {count} null elements)"
                else:
                    what = f"a null element (index {int(np.argmax(nulls[row]))} of {nulls.shape[1]})"
                    drop = "fill or drop the nulls in the values the arrays are made of"
            raise NullValueError(
                f"column {column!r} ({self._types[column]}) holds {what} at row position {first} and {fix}, or {drop}"
            )
        target[nulls] = np.nan if policy == "nan" else policy

    def _check_null_arrays(
        self, lengths: np.ndarray, elements: np.ndarray | None, column: str, fix: str, spans: Sequence[Span]
    ) -> None:
        """Raises NullValueError for a padded column's first null array (lengths -1) unless a null element
        comes before it (:meth:`_apply_nulls` names that one). Under a fill policy a null array is all pad values."""
        if not (lengths < 0).any():
            return
        row = int(np.argmax(lengths < 0))
        if elements is None or not elements[: row + 1].any():
            first = int(read_positions(PagePlan(tuple(spans)))[row])
            raise NullValueError(
                f"column {column!r} ({self._types[column]}) holds a null array at row position {first} and {fix} "
                f"(under a fill policy a padded column's null array becomes all pad_value), or drop such rows with "
                f"DQL: table.where('!isNull({column})')"
            )

    def _pad(self, lengths: np.ndarray, field: Field, target: np.ndarray) -> None:
        """Writes ``field.pad_value`` into the pad positions of ``target`` (NOTE [ Ragged arrays ])."""
        padding = field.padding
        if padding is not None and not (lengths == padding.length).all():
            target[pad_mask(lengths, padding.length, padding.padding)] = field.pad_value

    def cancel(self) -> None:
        """Ends a read in flight from another thread, if the span reader can (NOTE [ Cancelling reads ])."""
        cancel = getattr(self._spans, "cancel", None)
        if cancel is not None:
            cancel()

    def close(self) -> None:
        """Releases the span reader. Safe to call twice."""
        self._spans.close()
        self._scratch = {}


STACK_BLOCK_BYTES = 4 * 2**20
"""Bytes of one field's output cast in one row block by :func:`cast_columns` (measured best among 0.25-16 MiB)."""


def cast_columns(
    out: np.ndarray, field: Field, native: Mapping[str, np.ndarray], in_place: Container[str] = ()
) -> None:
    """Casts each of ``field``'s native column arrays into its slot ``out[..., index]``; null sentinels stay as read.

    Columns in ``in_place`` were read straight into their slot (NOTE [ Filling outputs in place ]).

    A multi-column field is written one block of rows at a time, every column per block: one
    column at a time would stream the whole strided output through memory once per column (16
    float32 columns: each 64-byte row is one cache line, rewritten 16 times), 2.5-3x slower for
    1M-row pages (measured by ``benchmarks/remote.py``'s profile, where it was the loader's largest cost).
    """
    columns = [(index, native[column]) for index, column in enumerate(field.columns) if column not in in_place]
    if not columns:
        return
    with np.errstate(over="ignore", invalid="ignore"):  # null sentinels overflow; fixed by the null policy
        if field.squeeze:
            out[...] = columns[0][1]
            return
        block = max(1, STACK_BLOCK_BYTES // max(1, out[:1].nbytes))
        for start in range(0, len(out), block):
            part = out[start : start + block]
            for index, values in columns:
                part[..., index] = values[start : start + block]


def deliver(arrays: list[np.ndarray], plan: PagePlan) -> list[np.ndarray]:
    """The page's arrays (rows in read order) in delivery order: permuted, then ``skip_rows`` dropped."""
    permutation = page_permutation(plan)
    if permutation is not None:
        if plan.skip_rows:
            permutation = permutation[plan.skip_rows :]
        # One row gather per output array (C-ordered rows) is cheaper than one per column, and
        # np.take is about 2x faster than fancy indexing for it (measured on 458K x 16 float32).
        return [take_rows(array, permutation) for array in arrays]
    return [array[plan.skip_rows :] for array in arrays] if plan.skip_rows else arrays
