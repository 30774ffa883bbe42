"""The engine fast path (engine internals) against the public deephaven.numpy.to_numpy, same rows."""

from __future__ import annotations

import numpy as np
import pytest

from dh_tf.sources import engine_read
from dh_tf.sources.column_types import COLUMN_KINDS
from dh_tf.sources.engine import EngineSource

FORMULAS = [
    "B = i % 7 == 0 ? NULL_BYTE : (byte)(i % 100)",
    "S = (short)(i - 20000)",
    "I = i % 11 == 0 ? NULL_INT : (int)(i * 3)",
    "L = (long)i * 99991",
    "F = i % 13 == 0 ? NULL_FLOAT : (float)(i / 3.0)",
    "D = i % 5 == 0 ? NULL_DOUBLE : Math.sin(i)",
    "Bool = i % 4 == 0 ? null : i % 3 == 0",
]


@pytest.fixture(scope="module")
def parquet_table(make_table, tmp_path_factory):
    from deephaven import parquet

    path = str(tmp_path_factory.mktemp("engine") / "t.parquet")
    # Small row groups so spans cross row-group boundaries (sparse row keys, docs/design.md section 2).
    parquet.write(make_table(300_000, *FORMULAS), path, max_dictionary_keys=0, target_page_size=1 << 16)
    # A formula Boolean (update_view) cannot be reinterpreted as bytes: it must be wrapped instead.
    return parquet.read(path).where("Id % 3 != 1").update_view("ViewBool = isNull(Bool) ? null : !Bool")


def test_fast_path_is_available_here(server):
    assert engine_read.available()


@pytest.mark.parametrize("spans", [[(0, 200_000)], [(5, 6)], [(199_990, 200_000), (0, 70_000), (123_456, 190_000)]])
def test_engine_read_equals_to_numpy_on_the_same_rows(parquet_table, spans):
    from deephaven.numpy import to_numpy

    types = EngineSource(parquet_table, "test").column_types
    columns = ["B", "S", "I", "L", "F", "D", "Bool", "ViewBool"]
    kinds = {c: COLUMN_KINDS[types[c]] for c in columns}
    rows = sum(b - a for a, b in spans)
    out = {c: np.full(rows, 77, dtype=kinds[c].dtype) for c in columns}
    reader = engine_read.EngineColumnReader(parquet_table.j_table, kinds)
    try:
        reader.read(spans, out)
    finally:
        reader.close()
        reader.close()  # twice is safe
    for column in columns:
        view = parquet_table
        if column.endswith("Bool"):  # to_numpy turns null booleans into True: compare through DQL bytes
            view = parquet_table.view([f"{column} = isNull({column}) ? (byte)-128 : ({column} ? (byte)1 : (byte)0)"])
        expected = np.concatenate([to_numpy(view.slice(a, b), [column])[:, 0] for a, b in spans])
        assert expected.dtype == out[column].dtype
        assert np.array_equal(out[column], expected.astype(out[column].dtype)), column


def test_concurrent_readers_on_disjoint_ranges_equal_the_serial_read(parquet_table):
    """NOTE [ Reader threads ]: one fill context per thread makes concurrent fillChunk safe (docs/design.md section 4)."""
    import threading

    types = EngineSource(parquet_table, "test").column_types
    columns = ["B", "I", "L", "F", "D", "Bool", "ViewBool"]
    kinds = {c: COLUMN_KINDS[types[c]] for c in columns}
    rows = int(parquet_table.size)

    def read(spans):
        out = {c: np.empty(sum(b - a for a, b in spans), dtype=kinds[c].dtype) for c in columns}
        reader = engine_read.EngineColumnReader(parquet_table.j_table, kinds)
        try:
            reader.read(spans, out)
        finally:
            reader.close()
        return out

    serial = read([(0, rows)])
    pieces = [(a, min(a + 25_000, rows)) for a in range(0, rows, 25_000)]
    results: dict[int, dict] = {}

    def work(index):
        for n in range(index, len(pieces), 4):
            results[n] = read([pieces[n]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    for column in columns:
        joined = np.concatenate([results[n][column] for n in range(len(pieces))])
        assert np.array_equal(joined, serial[column]), column
