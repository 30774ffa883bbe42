"""Chosen rows of a live engine table (positions, or row keys it holds) read into a new ``RowPage``.

One job: the page reader of engine follow (NOTE [ Engine follow ] in ``engine_follow.py``), the engine
read path (``engine_read.EngineColumnReader``) over the table itself, with null masks and padded lengths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.sources import engine_read
from dh_tf.sources.column_types import ColumnKind
from dh_tf.sources.protocol import RowPage, Span
from dh_tf.sources.ragged import PaddedColumn, Padding


class RowsReader:
    """Reads chosen rows of a live table (positions, or row keys it holds) into new native arrays.

    The engine read path over the table itself; call it under the shared lock or inside the update
    cycle, one reader per thread. ``close()`` frees the fill contexts and chunks; safe twice. Array
    columns are read padded by ``padding`` (NOTE [ Ragged arrays ]).
    """

    def __init__(self, j_table: Any, kinds: Mapping[str, ColumnKind], padding: Mapping[str, Padding] | None = None) -> None:
        self._j_table = j_table
        self._kinds = dict(kinds)
        self._padding = dict(padding or {})
        self._columns = engine_read.EngineColumnReader(j_table, self._kinds)

    @property
    def rows_per_chunk(self) -> int:
        """The most rows one page should hold: one engine chunk, fewer for long strings (NOTE [ Engine internals ])."""
        return self._columns.rows_per_chunk

    def read_positions(self, start: int, stop: int) -> RowPage:
        """The rows at table positions ``[start, stop)``."""
        return self._read([(start, stop)], stop - start, first_position=start)

    def read_keys(self, keys: Any) -> RowPage:
        """The rows of ``keys`` (a RowSet of keys the table holds now), in key order."""
        positions = self._j_table.getRowSet().invert(keys)
        try:
            spans = _spans(positions)
        finally:
            positions.close()
        return self._read(spans, int(keys.size()))

    def _read(self, spans: Sequence[Span], rows: int, first_position: int | None = None) -> RowPage:
        arrays = {
            name: np.empty((rows, self._padding[name].length) if name in self._padding else rows, dtype=kind.dtype)
            for name, kind in self._kinds.items()
        }
        padded = {name: PaddedColumn(pad, np.empty(rows, dtype=np.int32)) for name, pad in self._padding.items()}
        self._columns.read(spans, arrays, padded)
        masks: dict[str, np.ndarray | None] = {}
        for name, kind in self._kinds.items():
            nulls = arrays[name] == kind.null_value
            masks[name] = nulls if nulls.any() else None
        return RowPage(arrays, masks, rows, first_position, {name: p.lengths for name, p in padded.items()})

    def close(self) -> None:
        self._columns.close()


def _spans(positions: Any) -> list[Span]:
    """The ranges of a RowSet of positions, as half-open spans."""
    spans = []
    ranges = positions.rangeIterator()
    try:
        while ranges.hasNext():
            ranges.next()
            spans.append((int(ranges.currentRangeStart()), int(ranges.currentRangeEnd()) + 1))
    finally:
        ranges.close()
    return spans
