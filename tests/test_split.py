"""dh_tf.split: disjoint parts that cover every row, the same for a seed, by row position or by key, embedded
and remote (NOTE [ Splits ] in dh_tf/sources/split.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import TEST_PSK

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError

NUM_ROWS = 100_000
FRACTIONS = [0.7, 0.2, 0.1]


def mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's mix (Java's ``SplittableRandom.mix64``), on uint64 (wrapping) arithmetic."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def expected_parts(keys: np.ndarray, seed: int, fractions: list[float]) -> np.ndarray:
    """The part of each row whose key (as a long) is ``keys``, recomputed independently of the engine:
    ``U = mix(key + mix(seed + golden gamma)) >>> 11`` against the cumulative fractions times 2**53."""
    with np.errstate(over="ignore"):
        offset = mix(np.array([seed], dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))[0]
        unit = mix(keys.astype(np.int64).view(np.uint64) + offset) >> np.uint64(11)
    bounds = [round(math.fsum(fractions[: k + 1]) * 2**53) for k in range(len(fractions) - 1)]
    return np.searchsorted(np.array(bounds, dtype=np.uint64), unit, side="right")


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(NUM_ROWS, "S = Id % 1000 == 5 ? null : (Id % 1000 == 6 ? `polygenelubricants` : `u` + (Id % 1000))",
                      "K = Id % 500 == 7 ? NULL_LONG : Id % 500", "D = Id % 3 == 0 ? -0.0 : (Id % 3 == 1 ? 0.0 : 1.5)")


def ids(part) -> np.ndarray:
    from deephaven.numpy import to_numpy

    return to_numpy(part, ["Id"])[:, 0] if part.size else np.zeros(0, dtype=np.int64)


def test_parts_are_disjoint_and_cover_every_row(table):
    parts = dh_tf.split(table, FRACTIONS, seed=3)
    assert isinstance(parts, tuple) and len(parts) == 3
    assert np.array_equal(np.sort(np.concatenate([ids(p) for p in parts])), np.arange(NUM_ROWS))
    assert [[c.name for c in p.columns] for p in parts] == [["Id", "S", "K", "D"]] * 3  # no helper column left


@pytest.mark.parametrize("seed", [0, 3, 2**63 - 1])
def test_each_row_lands_where_splitmix64_of_its_position_puts_it(table, seed):
    want = expected_parts(np.arange(NUM_ROWS), seed, FRACTIONS)
    parts = dh_tf.split(table, FRACTIONS, seed=seed)
    for k, part in enumerate(parts):
        assert np.array_equal(ids(part), np.flatnonzero(want == k))


def test_same_seed_same_parts_another_seed_other_parts(table):
    first = [ids(p) for p in dh_tf.split(table, [0.8, 0.2], seed=11)]
    again = [ids(p) for p in dh_tf.split(table, (0.8, 0.2), seed=11)]
    other = [ids(p) for p in dh_tf.split(table, [0.8, 0.2], seed=12)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    moved = len(np.setxor1d(first[1], other[1]))
    assert abs(moved - 2 * 0.2 * 0.8 * NUM_ROWS) < 4 * math.sqrt(NUM_ROWS)  # unrelated: as two independent draws


def test_sizes_within_four_sigma_of_the_fractions(table):
    for seed in (0, 1, 2):
        sizes = [p.size for p in dh_tf.split(table, FRACTIONS, seed=seed)]
        for size, f in zip(sizes, FRACTIONS):
            assert abs(size - NUM_ROWS * f) < 4 * math.sqrt(NUM_ROWS * f * (1 - f)), (seed, sizes)


@pytest.mark.parametrize("by", ["S", "K", "D"])
def test_by_keeps_every_key_in_one_part_nulls_included(table, by):
    from deephaven.numpy import to_numpy

    parts = dh_tf.split(table, FRACTIONS, seed=5, by=by)
    assert np.array_equal(np.sort(np.concatenate([ids(p) for p in parts])), np.arange(NUM_ROWS))
    keys = [set(to_numpy(p, [by])[:, 0].tolist()) if p.size else set() for p in parts]
    assert sum(len(k) for k in keys) == len(set().union(*keys))  # no key in two parts
    if by == "D":  # -0.0 and 0.0 are one key: the rows of both in one part
        zero = [k for k, p in enumerate(parts) if p.where("D == 0.0").size]
        assert len(zero) == 1 and parts[zero[0]].where("D == 0.0").size == 2 * NUM_ROWS // 3 + 1


def test_by_long_key_lands_where_splitmix64_of_the_key_puts_it(table):
    keys = np.arange(NUM_ROWS) % 500
    keys[keys == 7] = np.iinfo(np.int64).min  # NULL_LONG, the key as the engine holds it
    want = expected_parts(keys, 9, [0.5, 0.5])
    for k, part in enumerate(dh_tf.split(table, [0.5, 0.5], seed=9, by="K")):
        assert np.array_equal(ids(part), np.flatnonzero(want == k))


def test_dict_fractions_give_named_parts_equal_to_the_tuple_form(table):
    named = dh_tf.split(table, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=4)
    assert list(named) == ["train", "val", "test"]
    plain = dh_tf.split(table, FRACTIONS, seed=4)
    assert [np.array_equal(ids(a), ids(b)) for a, b in zip(named.values(), plain)] == [True] * 3


def test_a_refreshing_table_splits_by_key_and_is_refused_without(server):
    from deephaven import time_table
    from deephaven.liveness_scope import liveness_scope

    with liveness_scope():  # the ticking tables stop with the test
        ticking = time_table("PT1s").update_view(["Key = ii % 10"])
        parts = dh_tf.split(ticking, [0.5, 0.5], by="Key")
        assert [p.is_refreshing for p in parts] == [True, True]
        assert [[c.name for c in p.columns] for p in parts] == [["Timestamp", "Key"]] * 2
        message = r"split: a refreshing table needs by= \(a key column\).*positions shift as rows arrive.*\['Timestamp', 'Key'\]"
        with pytest.raises(ArgumentError, match=message):
            dh_tf.split(ticking, [0.5, 0.5])


@pytest.mark.parametrize("by", [None, "S"])
def test_a_remote_table_gives_the_parts_of_the_embedded_one(server, table, by):
    from pydeephaven import Session

    import __main__

    __main__.split_test_table = table
    session = Session(port=server.test_port, auth_type="io.deephaven.authentication.psk.PskAuthenticationHandler",
                      auth_token=TEST_PSK)
    try:
        far = session.open_table("split_test_table")
        remote = dh_tf.split(far, {"a": 0.6, "b": 0.4}, seed=8, by=by)
        local = dh_tf.split(table, {"a": 0.6, "b": 0.4}, seed=8, by=by)
        for name in ("a", "b"):
            got = remote[name].to_arrow()
            assert got.column_names == ["Id", "S", "K", "D"]
            assert np.array_equal(got.column("Id").to_numpy(), ids(local[name]))
            remote[name].close()
    finally:
        session.close()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"fractions": [0.8, 0.3]}, ArgumentError, r"fractions must be a list/tuple of 2 or more numbers > 0 summing to 1, "
                                               r"or a dict name -> such a number \(got \[0.8, 0.3\], which sum to 1.1"),
    ({"fractions": [1.0]}, ArgumentError, r"\(got 1 part\(s\): \[1.0\]\)"),
    ({"fractions": [1.0, 0.0]}, ArgumentError, r"\(got \[1.0, 0.0\]: each must be > 0 and finite\)"),
    ({"fractions": [1.2, -0.2]}, ArgumentError, r"each must be > 0"),
    ({"fractions": [0.5, "0.5"]}, ArgumentTypeError, r"\(got '0.5' of type str in \[0.5, '0.5'\]\)"),
    ({"fractions": 0.8}, ArgumentTypeError, r"\(got 0.8 of type float\)"),
    ({"fractions": {1: 0.5, 2: 0.5}}, ArgumentTypeError, r"fractions' names must be str \(got 1 of type int\)"),
    ({"seed": 1.5}, ArgumentTypeError, r"split: seed must be an int in \[0, 9223372036854775807\] \(got 1.5 of type float"),
    ({"seed": None}, ArgumentTypeError, r"split: seed must be an int .*\(got None"),
    ({"seed": -1}, ArgumentError, r"split: seed must be an int in \[0, 9223372036854775807\] \(got -1\)"),
    ({"by": "Nope"}, ArgumentError, r"split: by='Nope' is not a column of the table \(its columns: \['Id', 'S', 'K', 'D'\]\)"),
    ({"by": 3}, ArgumentTypeError, r"split: by must be a column name \(a str\) or None \(got 3 of type int\)"),
])
def test_bad_arguments_are_refused_naming_the_argument_value_and_what_is_allowed(table, kwargs, error, message):
    arguments = {"fractions": [0.5, 0.5], **kwargs}
    with pytest.raises(error, match=message):
        dh_tf.split(table, arguments.pop("fractions"), **arguments)


def test_fractions_within_1e_9_of_one_are_accepted_and_an_array_key_refused(make_table):
    small = make_table(10, "A = new double[] {1.0}")
    assert sum(p.size for p in dh_tf.split(small, [0.3, 0.3, 0.4 + 5e-10])) == 10
    with pytest.raises(ArgumentTypeError, match=r"split: by column 'A' has type double\[\], whose values do not hash "
                                                r"by value; a key column must be one of byte, short"):
        dh_tf.split(small, [0.5, 0.5], by="A")
    with pytest.raises(ArgumentTypeError, match=r"split: table must be a deephaven.table.Table"):
        dh_tf.split([1, 2], [0.5, 0.5])
