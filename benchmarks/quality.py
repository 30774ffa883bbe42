"""Shuffle quality: how far an arm's delivery order is from the table's order, from the row ids it delivered.

A shuffled arm is compared with another at a *stated* quality (issue 24), so each shuffled arm runs one
untimed quality pass that collects the table position of every row it delivers, in delivery order, and
:func:`shuffle_quality` reduces it to two numbers:

- ``adjacent_share``: the share of consecutive output rows whose ids were neighbours in the table
  (``|id[i+1] - id[i]| == 1``): 1.0 in table order, about ``2 / rows`` for a uniform permutation, and
  about ``1 - blocks / rows`` when whole blocks of rows move together;
- ``abs_corr``: ``|Pearson correlation|`` of table position and output position: 1.0 in table order,
  about 0 for a uniform permutation, near 1 for a small ``shuffle(buffer)`` over a large table.

The benchmark table has no id column, so :class:`RowIds` recovers each delivered row's table position
from its features: the bit patterns of ``F0`` and ``F1`` (two independent float32 draws) form a 64-bit key
that is unique in the generated table (checked when the lookup is built; a duplicate raises). Pure numpy
and pyarrow: the petastorm venv imports this too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

KEY_COLUMNS = ("F0", "F1")
"""The two feature columns whose bits identify a row of the benchmark table."""


def shuffle_quality(ids: np.ndarray) -> dict[str, float]:
    """The two quality figures of a delivery order (see the module docstring).

    Args:
        ids: the table position of each delivered row, in delivery order (1-D, integers).

    Returns:
        ``{"adjacent_share": float, "abs_corr": float, "rows": int}``.

    Raises:
        ValueError: when ``ids`` has fewer than 2 rows or is not 1-D.

    Example:
        >>> shuffle_quality(np.arange(5))
        {'adjacent_share': 1.0, 'abs_corr': 1.0, 'rows': 5}

    A constant order (every id the same) has no correlation to measure: ``abs_corr`` is 0.0 then.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"shuffle_quality: ids must be 1-D with at least 2 rows (got shape {ids.shape})")
    steps = np.diff(ids.astype(np.int64))
    adjacent = float(np.count_nonzero(np.abs(steps) == 1) / len(steps))
    order = np.arange(len(ids), dtype=np.float64)
    values = ids.astype(np.float64)
    spread = values.std() * order.std()
    corr = 0.0 if spread == 0 else float(((values - values.mean()) * (order - order.mean())).mean() / spread)
    return {"adjacent_share": round(adjacent, 6), "abs_corr": round(abs(corr), 6), "rows": len(ids)}


def row_keys(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """The 64-bit key of each row: ``F0``'s float32 bits in the high half, ``F1``'s in the low half."""
    high = np.ascontiguousarray(f0, dtype=np.float32).view(np.uint32).astype(np.uint64)
    low = np.ascontiguousarray(f1, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (high << np.uint64(32)) | low


class RowIds:
    """Maps delivered rows back to their table positions, through the ``(F0, F1)`` key.

    Build once per table (reads two columns of the Parquet file), then call :meth:`of` on each
    delivered batch's features. Not thread-safe: use from the thread that runs the quality pass.
    """

    def __init__(self, path: str | Path) -> None:
        """Reads ``F0`` and ``F1`` of the Parquet file at ``path`` and sorts their keys.

        Raises:
            ValueError: when two rows of the table share a key (the ids would be ambiguous).
        """
        import pyarrow.parquet as pq

        columns = pq.read_table(path, columns=list(KEY_COLUMNS))
        keys = row_keys(columns["F0"].to_numpy(), columns["F1"].to_numpy())
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        if len(keys) > 1 and bool((self._sorted[1:] == self._sorted[:-1]).any()):
            raise ValueError(f"RowIds: two rows of {path} share an (F0, F1) key: the ids would be ambiguous")

    def of(self, features: np.ndarray) -> np.ndarray:
        """The table positions of a batch of rows, ``features`` shaped ``[rows, >= 2]`` (F0, F1 first).

        Raises:
            ValueError: when a row's key is not in the table (the arm delivered a row it should not have).
        """
        keys = row_keys(features[:, 0], features[:, 1])
        found = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
        missing = np.flatnonzero(self._sorted[found] != keys)
        if len(missing):
            raise ValueError(f"RowIds: delivered row {int(missing[0])} of the batch is not in the table")
        return self._order[found]


def measure_quality(batches: Any, row_ids: RowIds, expected_rows: int) -> dict[str, Any]:
    """One pass over ``batches`` (``(features, label)`` pairs, numpy or eager tensors): quality and coverage.

    Raises:
        RuntimeError: when the pass did not deliver every table row exactly once.
    """
    parts = [row_ids.of(np.asarray(features)) for features, _ in batches]
    ids = np.concatenate(parts) if parts else np.empty(0, np.int64)
    if len(ids) != expected_rows or len(np.unique(ids)) != expected_rows:
        raise RuntimeError(f"quality pass: delivered {len(ids)} rows ({len(np.unique(ids))} distinct), "
                           f"the table has {expected_rows}")
    return shuffle_quality(ids)
