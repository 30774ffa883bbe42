"""Casting a page's columns into a field's output row block by row block (``pages.cast_columns``).

The blocked cast must equal the plain column-by-column cast for every shape a field has; the loader
tests then read real tables (embedded and remote) with blocks far smaller than a page, so every page
crosses many block boundaries, with nulls and fill policies applied after the cast.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_remote import connect, publish

import dh_tf
import dh_tf.reading.pages as pages
from dh_tf.reading.layout import Field
from dh_tf.reading.pages import cast_columns
from dh_tf.sources.remote import RemoteSpanReader

NUM_ROWS = 10_007


def column_by_column(out: np.ndarray, field: Field, native: dict[str, np.ndarray]) -> None:
    """The reference: one whole column at a time."""
    for index, column in enumerate(field.columns):
        target = out if field.squeeze else out[..., index]
        with np.errstate(over="ignore", invalid="ignore"):
            target[...] = native[column]


def field(columns: tuple[str, ...], dtype: str, array_length: int | None = None, squeeze: bool = False) -> Field:
    return Field("x", None, columns, squeeze, np.dtype(dtype), ("error",) * len(columns), array_length)


@pytest.mark.parametrize("block_bytes", [1, 100, 4096, 4 * 2**20])
@pytest.mark.parametrize("rows", [0, 1, 999, 10_007])
def test_blocked_cast_equals_the_column_by_column_cast(monkeypatch, block_bytes, rows):
    monkeypatch.setattr(pages, "STACK_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(rows)
    native = {
        "D": rng.normal(size=rows),
        "I": rng.integers(-(2**31), 2**31 - 1, size=rows, dtype=np.int32),
        "L": np.full(rows, np.iinfo(np.int64).min),  # a null sentinel: overflows the cast, fixed by the null policy
        "By": rng.integers(-128, 127, size=rows, dtype=np.int8),
        "A": rng.normal(size=(rows, 3)),
        "B": rng.integers(0, 100, size=(rows, 3), dtype=np.int32),
        "S": np.array([f"s{i}" for i in range(rows)], dtype=object),
        "T": np.array([None if i % 3 else f"t{i}" for i in range(rows)], dtype=object),
    }
    cases = [
        field(("D", "I", "L", "By"), "float32"),
        field(("I", "By"), "int64"),
        field(("D",), "float32", squeeze=True),
        field(("A", "B"), "float64", array_length=3),
        field(("A",), "float32", array_length=3, squeeze=True),
        field(("S", "T"), "object"),
    ]
    for case in cases:
        got = np.empty((rows, *case.shape), dtype=case.dtype)
        want = np.empty_like(got)
        cast_columns(got, case, native)
        column_by_column(want, case, native)
        if case.dtype.kind == "O":
            assert got.tolist() == want.tolist(), case.columns
        else:
            assert np.array_equal(got, want, equal_nan=True), case.columns


@pytest.fixture(scope="module")
def tables(server, make_table):
    table = make_table(
        NUM_ROWS,
        "A = Id * 0.5",
        "N = Id % 7 == 3 ? NULL_DOUBLE : (double)(Id * 2)",
        "I = (int)(Id % 1000)",
        "Sh = Id % 5 == 1 ? NULL_SHORT : (short)(Id % 300)",
        "Fa = (float)(Id * 0.25)",
        "Fn = Id % 7 == 3 ? NULL_FLOAT : (float)Id",
        "Fb = (float)(Id % 100)",
    )
    publish("page_cast_table", table)
    session = connect(server.test_port)
    yield {"embedded": table, "remote": session.open_table("page_cast_table")}
    session.close()


@pytest.mark.parametrize("source_kind", ["embedded", "remote"])
@pytest.mark.parametrize("reader_threads", [1, 2])
def test_pages_cast_in_small_blocks_keep_every_value_and_null_policy(monkeypatch, tables, source_kind, reader_threads):
    monkeypatch.setattr(pages, "STACK_BLOCK_BYTES", 256)  # 16 rows of 4 float32: ~190 blocks per page
    loader = dh_tf.TableLoader(tables[source_kind], ["A", "N", "I", "Sh"], "Id", batch_size=1000, page_rows=3001,
                               nulls={"N": "nan", "Sh": -1}, reader_threads=reader_threads)
    batches = list(loader)
    ids = np.concatenate([y for _, y in batches])
    x = np.concatenate([x for x, _ in batches])
    assert np.array_equal(ids, np.arange(NUM_ROWS))
    assert x.dtype == np.float32 and x.shape == (NUM_ROWS, 4) and x.flags["C_CONTIGUOUS"]
    assert np.array_equal(x[:, 0], (ids * 0.5).astype(np.float32))
    assert np.array_equal(x[:, 1], np.where(ids % 7 == 3, np.nan, ids * 2).astype(np.float32), equal_nan=True)
    assert np.array_equal(x[:, 2], (ids % 1000).astype(np.float32))
    assert np.array_equal(x[:, 3], np.where(ids % 5 == 1, -1, ids % 300).astype(np.float32))


@pytest.mark.parametrize("source_kind", ["embedded", "remote"])
def test_a_null_under_error_is_named_after_a_blocked_cast(monkeypatch, tables, source_kind):
    monkeypatch.setattr(pages, "STACK_BLOCK_BYTES", 256)
    loader = dh_tf.TableLoader(tables[source_kind], ["A", "Sh"], "Id", batch_size=1000, page_rows=3001)
    with pytest.raises(dh_tf.NullValueError, match=r"column 'Sh' \(short\) holds a null at row position 1 "):
        list(loader)


@pytest.mark.parametrize("reader_threads", [1, 2])
def test_remote_pages_filled_in_place_equal_the_scratch_path(monkeypatch, tables, reader_threads):
    """NOTE [ Filling outputs in place ]: float columns go straight into x's slots; Fa (used twice), A
    (double, cast) and the label go through scratch arrays; both paths give the same arrays."""
    assert RemoteSpanReader.fills_strided

    def read(fills_strided: bool) -> list:
        monkeypatch.setattr(RemoteSpanReader, "fills_strided", fills_strided)
        loader = dh_tf.TableLoader(tables["remote"], ["Fa", "Fn", "A", "Fb"], "Fa", batch_size=1000,
                                   page_rows=3001, nulls={"Fn": "nan"}, reader_threads=reader_threads)
        return list(loader)

    in_place, scratch = read(True), read(False)
    for (x, y), (sx, sy) in zip(in_place, scratch, strict=True):
        assert x.dtype == sx.dtype == np.float32 and y.dtype == sy.dtype and x.flags["C_CONTIGUOUS"]
        assert np.array_equal(x, sx, equal_nan=True) and np.array_equal(y, sy)
    ids = np.arange(NUM_ROWS)
    x = np.concatenate([x for x, _ in in_place])
    assert np.array_equal(x[:, 0], (ids * 0.25).astype(np.float32))
    assert np.array_equal(x[:, 1], np.where(ids % 7 == 3, np.nan, ids).astype(np.float32), equal_nan=True)
    assert np.array_equal(x[:, 2], (ids * 0.5).astype(np.float32))
    assert np.array_equal(x[:, 3], (ids % 100).astype(np.float32))
    with pytest.raises(dh_tf.NullValueError, match=r"column 'Fn' \(float\) holds a null at row position 3 "):
        list(dh_tf.TableLoader(tables["remote"], ["Fb", "Fn"], batch_size=1000, page_rows=3001,
                               reader_threads=reader_threads))
