"""The engine write path (dh_tf.write.engine_write) against the public deephaven.numpy.to_table on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest

ROWS = 10_000


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {
        "B": rng.integers(-127, 128, ROWS).astype(np.int8),
        "S": rng.integers(-32767, 32768, ROWS).astype(np.int16),
        "I": rng.integers(-(2**31) + 1, 2**31, ROWS).astype(np.int32),
        "L": rng.integers(-(2**62), 2**62, ROWS).astype(np.int64),
        "F": rng.standard_normal(ROWS).astype(np.float32),
        "D": rng.standard_normal(ROWS),
    }
    arrays["F"][:3] = [np.inf, -np.inf, np.finfo(np.float32).max]
    arrays["D"][:3] = [np.inf, -np.inf, 1e300]
    return arrays


def test_available(server):
    from dh_tf.write import engine_write

    assert engine_write.available()


def test_same_table_as_public_to_table(server):
    from deephaven.numpy import to_numpy, to_table

    from dh_tf.write import engine_write

    arrays = _arrays()
    ours = engine_write.to_table(arrays)
    assert ours.size == ROWS and not ours.is_refreshing
    for name, values in arrays.items():
        public = to_table(values.reshape(-1, 1), [name])
        assert ours.columns[list(arrays).index(name)].data_type == public.columns[0].data_type, name
        got = to_numpy(ours, [name])[:, 0]
        assert got.dtype == values.dtype
        np.testing.assert_array_equal(got, to_numpy(public, [name])[:, 0])
        np.testing.assert_array_equal(got, values)


def test_nan_stays_nan(server):
    from deephaven.numpy import to_numpy

    from dh_tf.write import engine_write

    values = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    table = engine_write.to_table({"F": values})
    assert table.where("isNull(F)").size == 0 and table.where("isNaN(F)").size == 1
    np.testing.assert_array_equal(to_numpy(table, ["F"])[:, 0], values)


def test_columns_of_a_sparse_base_pair_by_position(server):
    from deephaven import empty_table
    from deephaven.numpy import to_numpy

    from dh_tf.write import engine_write

    base = empty_table(3 * ROWS).update(["Id = (long)i", "Key = `k` + i", "Ts = '2024-01-01T00:00:00Z' + i * SECOND"])
    base = base.where("Id % 3 != 0")  # sparse row keys
    values = np.arange(base.size, dtype=np.float64) * 0.5
    table = engine_write.to_table({"P": values}, base.view(["Id", "Key", "Ts"]).snapshot())
    assert [c.name for c in table.columns] == ["Id", "Key", "Ts", "P"]
    assert str(table.columns[2].data_type) == str(base.columns[2].data_type)
    np.testing.assert_array_equal(to_numpy(table, ["Id"])[:, 0], to_numpy(base, ["Id"])[:, 0])
    np.testing.assert_array_equal(to_numpy(table, ["P"])[:, 0], values)
    assert to_numpy(table.slice(5, 6), ["Key"])[0, 0] == to_numpy(base.slice(5, 6), ["Key"])[0, 0]


def test_builder_fills_pieces_and_checks_bounds(server):
    from deephaven.numpy import to_numpy

    from dh_tf.write import engine_write

    builder = engine_write.ColumnBuilder(np.int32, 6)
    builder.put(0, np.array([1, 2, 3], dtype=np.int32))
    builder.put(3, np.array([4, 5, 6], dtype=np.int32))
    table = engine_write.table_from_sources(6, {"X": builder.column_source()})
    np.testing.assert_array_equal(to_numpy(table, ["X"])[:, 0], [1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match=r"rows \[5, 8\) are outside \[0, 6\)"):
        builder.put(5, np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match="values must be 1-D int32"):
        builder.put(0, np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="dtype must be one of"):
        engine_write.ColumnBuilder(np.uint8, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        engine_write.to_table({"A": np.zeros(2), "B": np.zeros(3)})
