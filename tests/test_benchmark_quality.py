"""benchmarks/quality.py: the shuffle-quality figures and the row-id lookup (pure numpy and pyarrow, no JVM)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.quality import RowIds, measure_quality, shuffle_quality


def test_table_order_is_adjacent_and_correlated() -> None:
    assert shuffle_quality(np.arange(10)) == {"adjacent_share": 1.0, "abs_corr": 1.0, "rows": 10}


def test_reversed_order_counts_backward_neighbours() -> None:
    assert shuffle_quality(np.arange(10)[::-1]) == {"adjacent_share": 1.0, "abs_corr": 1.0, "rows": 10}


def test_blocks_moved_whole_keep_their_inner_neighbours() -> None:
    ids = np.concatenate([np.arange(4, 8), np.arange(0, 4)])  # two blocks of 4, swapped
    assert shuffle_quality(ids)["adjacent_share"] == pytest.approx(6 / 7)


def test_uniform_permutation_is_near_zero() -> None:
    found = shuffle_quality(np.random.default_rng(0).permutation(100_000))
    assert found["adjacent_share"] < 1e-3
    assert found["abs_corr"] < 0.02


def test_constant_order_has_no_correlation() -> None:
    assert shuffle_quality(np.zeros(5, np.int64)) == {"adjacent_share": 0.0, "abs_corr": 0.0, "rows": 5}


def test_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ids must be 1-D with at least 2 rows \(got shape \(1,\)\)"):
        shuffle_quality(np.array([3]))


def test_row_ids_recover_positions_and_coverage(tmp_path) -> None:
    rng = np.random.default_rng(1)
    f0, f1 = rng.standard_normal(1000, np.float32), rng.standard_normal(1000, np.float32)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"F0": f0, "F1": f1}), path)
    order = rng.permutation(1000)
    features = np.stack([f0, f1], axis=1)[order]
    ids = RowIds(path)
    np.testing.assert_array_equal(ids.of(features), order)
    batches = [(features[i : i + 64], None) for i in range(0, 1000, 64)]
    assert measure_quality(batches, ids, 1000) == shuffle_quality(order)
    with pytest.raises(RuntimeError, match="delivered 936 rows \\(936 distinct\\), the table has 1000"):
        measure_quality(batches[1:], ids, 1000)
    with pytest.raises(ValueError, match="delivered row 0 of the batch is not in the table"):
        ids.of(np.array([[9.5, 9.5]], np.float32))


def test_row_ids_refuse_duplicate_keys(tmp_path) -> None:
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"F0": np.ones(3, np.float32), "F1": np.ones(3, np.float32)}), path)
    with pytest.raises(ValueError, match="share an \\(F0, F1\\) key"):
        RowIds(path)
