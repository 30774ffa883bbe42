"""Read one page (the rows of a :class:`~dh_tf.plan.PagePlan`) into C-ordered numpy arrays.

The page reader reads each needed column once into a native-typed scratch array (fast engine path,
or the public ``deephaven.numpy`` path as fallback), applies the page's row permutation, applies
the null policy of each column, and casts into one output array per :class:`~dh_tf.columns.Field`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf import _engine_read
from dh_tf.columns import COLUMN_KINDS, ColumnKind, Layout, note_read_error
from dh_tf.plan import PagePlan, page_permutation, read_positions
from dh_tf.source import column_types


class NullValueError(ValueError):
    """A Deephaven null was found in a column whose null policy is ``"error"``."""


class PublicColumnReader:
    """The fallback read path: ``deephaven.numpy.to_numpy`` on ``Table.slice`` for each span.

    Slower than the engine path (it exports Java arrays while holding the GIL), but public API.
    Boolean columns are read through a DQL view that maps true/false/null to 1/0/-128, because
    ``to_numpy`` turns a null boolean into True.
    """

    def __init__(self, table: Any, kinds: Mapping[str, ColumnKind]) -> None:
        self._table = table
        self._kinds = dict(kinds)

    def read(self, spans: Sequence[tuple[int, int]], out: Mapping[str, np.ndarray]) -> None:
        """Fills ``out[name][:n]`` with each column's values at the rows of ``spans``, in order."""
        from deephaven.numpy import to_numpy

        offset = 0
        for start, stop in spans:
            piece = self._table.slice(start, stop)
            for name, kind in self._kinds.items():
                try:
                    values = self._read_column(piece, name, kind, to_numpy)
                except Exception as error:
                    note_read_error(error, name, start, stop)
                    raise
                out[name][offset : offset + stop - start] = values.reshape(-1)
            offset += stop - start

    @staticmethod
    def _read_column(piece: Any, name: str, kind: ColumnKind, to_numpy: Any) -> np.ndarray:
        if kind.deephaven_type == "java.lang.Boolean":
            piece = piece.view([f"{name} = isNull({name}) ? (byte)-128 : ({name} ? (byte)1 : (byte)0)"])
        return to_numpy(piece, [name])

    def close(self) -> None:
        """Nothing to release; present for symmetry with the engine reader."""


class PageReader:
    """Reads pages of one static table for one layout.

    Not thread-safe: use one reader per thread, and ``close()`` it on that thread (closing twice is
    safe). ``exec_ctx`` is opened around each page read only, never across a yield, so a reader can
    run on a thread without a Deephaven ExecutionContext (e.g. a tf.data thread).
    """

    def __init__(self, table: Any, layout: Layout, *, exec_ctx: Any = None, fast: bool | None = None) -> None:
        self._layout = layout
        self._exec_ctx = exec_ctx
        definition = column_types(table)
        self._kinds = {name: COLUMN_KINDS[definition[name]] for name in layout.columns}
        self._scratch: dict[str, np.ndarray] = {}
        use_fast = _engine_read.available() if fast is None else fast
        with self._context():
            self._columns: Any = (
                _engine_read.EngineColumnReader(table.j_table, self._kinds)
                if use_fast
                else PublicColumnReader(table, self._kinds)
            )

    def _context(self) -> Any:
        return self._exec_ctx if self._exec_ctx is not None else contextlib.nullcontext()

    def read(self, plan: PagePlan) -> list[np.ndarray]:
        """Returns one new C-ordered array per field, with the page's rows in delivery order.

        Raises:
            NullValueError: a column with null policy ``"error"`` holds a null; the message names
                the column and the row's position in the table.
        """
        rows = plan.num_rows
        native = {name: self._scratch_array(name, kind, rows) for name, kind in self._kinds.items()}
        with self._context():
            self._columns.read(plan.spans, native)
        arrays = []
        for field in self._layout.fields:
            out = np.empty((rows, *field.shape), dtype=field.dtype)
            for index, (column, policy) in enumerate(zip(field.columns, field.nulls)):
                target = out if field.squeeze else out[:, index]
                self._convert(native[column], self._kinds[column], column, policy, target, plan)
            arrays.append(out)
        # One row gather per output array (C-ordered rows) is cheaper than one per column.
        permutation = page_permutation(plan)
        return arrays if permutation is None else [array[permutation] for array in arrays]

    def _scratch_array(self, name: str, kind: ColumnKind, rows: int) -> np.ndarray:
        scratch = self._scratch.get(name)
        if scratch is None or len(scratch) < rows:
            scratch = self._scratch[name] = np.empty(rows, dtype=kind.dtype)
        return scratch[:rows]

    @staticmethod
    def _convert(
        values: np.ndarray, kind: ColumnKind, column: str, policy: Any, target: np.ndarray, plan: PagePlan
    ) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # null sentinels overflow; fixed below
            target[...] = values
        nulls = values == kind.null_value
        if not nulls.any():
            return
        if policy == "error":
            first = int(read_positions(plan)[np.argmax(nulls)])
            raise NullValueError(
                f"column {column!r} ({kind.deephaven_type}) holds a null at row position {first} "
                f"and nulls='error'; pass nulls='nan' or a fill number (for all columns or as "
                f"nulls={{{column!r}: ...}}), or drop such rows with DQL: "
                f"table.where('!isNull({column})')"
            )
        target[nulls] = np.nan if policy == "nan" else policy

    def close(self) -> None:
        """Releases the engine resources of this reader. Safe to call twice."""
        self._columns.close()
        self._scratch = {}
