"""Moments (count, mean, population variance) equal to numpy float64, far from zero too.

The pure arithmetic (``shifted_moments``, ``converged_moments``) is checked against numpy with a
numpy stand-in for the engine's pass; ``moments`` and ``dh_tf.adapt(Normalization)`` on real
embedded tables, remote ones through a pydeephaven Session, and a ticking table.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_remote import connect, publish, server_exports

import dh_tf
from dh_tf.sources.moment_sums import MAX_PASSES, converged_moments, shifted_moments
from dh_tf.sources.statistics import moments

NULL_LONG = -(2**63)
NULL_INT = -(2**31)
NULL_SHORT = -(2**15)
NUM_ROWS = 200_000  # 200K longs near 1.7e18 overflow a Java long sum 18 times over


def assert_numpy_moments(found, index: int, values: np.ndarray, *, noise: float = 0.0) -> None:
    """``found``'s column ``index`` against numpy float64: the mean within 1e-9 relative (to the standard
    deviation where that is larger: a mean near 0 has no relative precision), the variance within 1e-6
    relative or 1e-12 absolute, plus ``noise``."""
    x = values.astype(np.float64)
    mean, variance = x.mean(), x.var()
    assert int(found.count[index]) == len(x)
    assert abs(found.mean[index] - mean) <= 1e-9 * max(abs(mean), np.sqrt(variance)), (found.mean[index], mean)
    assert abs(found.variance[index] - variance) <= 1e-6 * variance + 1e-12 + noise, (found.variance[index], variance)
    assert found.variance[index] >= 0


# --- the arithmetic, with numpy for the engine ---------------------------------------------------------


def numpy_pass(x: np.ndarray):
    """A stand-in for the engine's pass over the columns of ``x`` ([rows, columns]): count, mean of D, sample
    variance of D as Deephaven's ``var`` computes it, from one running sum of D and one of D**2."""

    def shifted_pass(pilot, which):
        d = x[:, which] - pilot[which]
        n = len(x)
        total, squares = np.cumsum(d, axis=0)[-1], np.cumsum(d * d, axis=0)[-1]  # sequential, as the engine
        with np.errstate(invalid="ignore", divide="ignore"):
            sample = np.where(n > 1, (squares - total * total / n) / (n - 1), np.nan)
        return np.full(len(which), n), total / n, sample

    return shifted_pass


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    base=st.sampled_from([0.0, 1e9, -1e9, 1234567.891, 1e6, 1.7e18, -3.3e15, 1e-300, 7.5e150]),
    scale=st.sampled_from([0.0, 1e-2, 1.0, 1e3, 1e14]),
    steps=st.lists(st.integers(-1000, 1000), min_size=1, max_size=300),
    pilot_from=st.sampled_from(["head", "first", "zero", "far"]),
)
def test_converged_moments_equal_numpy_whatever_the_pilot(base, scale, steps, pilot_from):
    x = base + scale * np.array(steps, dtype=np.float64)
    pilot = {"head": x[:17].mean(), "first": x[0], "zero": 0.0, "far": -2 * x[0] - 1e12}[pilot_from]
    found = converged_moments(numpy_pass(x[:, None]), np.array([pilot]), all_columns=False)
    # numpy's own mean of a constant column is off by an ulp or so: a variance below the mean's resolution is noise.
    assert_numpy_moments(found, 0, x, noise=(4 * np.finfo(np.float64).eps * x.mean()) ** 2)


def test_shifted_moments_undo_the_shift_and_bessel():
    found = shifted_moments([2, 1, 0, 3], [1e9, 5.0, 0.0, 1.0], [0.5, 2.0, np.nan, np.nan], [0.5, np.nan, np.nan, np.nan])
    assert found.count.tolist() == [2, 1, 0, 3]
    assert found.mean[0] == 1e9 + 0.5 and found.variance[0] == 0.25
    assert found.mean[1] == 7.0 and found.variance[1] == 0.0  # one value: variance 0, as numpy
    assert np.isnan(found.mean[2]) and np.isnan(found.variance[2])  # no values
    assert np.isnan(found.mean[3]) and np.isnan(found.variance[3])  # a NaN among the values
    assert shifted_moments([5], [0.0], [1.0], [-1e-20]).variance[0] == 0.0  # rounding never makes it negative


def test_a_far_pilot_takes_one_more_pass_of_only_its_column_or_of_all_columns():
    x = np.stack([1e9 + np.arange(1000) % 2, np.arange(1000.0)], axis=1)
    calls = []
    inner = numpy_pass(x)

    def shifted_pass(pilot, which):
        calls.append((pilot[which].tolist(), which.tolist()))
        return inner(pilot, which)

    found = converged_moments(shifted_pass, np.array([0.0, 500.0]), all_columns=False)
    assert [which for _, which in calls] == [[0, 1], [0]]
    assert calls[1][0] == [1e9 + 0.5]
    np.testing.assert_allclose(found.variance, [0.25, x[:, 1].var()], rtol=1e-12)
    calls.clear()
    converged_moments(shifted_pass, np.array([0.0, 500.0]), all_columns=True)  # a refreshing table: one cycle
    assert [which for _, which in calls] == [[0, 1], [0, 1]]
    calls.clear()
    converged_moments(shifted_pass, np.array([np.nan, np.inf]), all_columns=False)  # a non-finite pilot counts as 0
    assert calls[0][0] == [0.0, 0.0] and len(calls) <= MAX_PASSES


# --- real tables -------------------------------------------------------------------------------------

# Each case: a formula of row i, and whether it is a long.
FAR_FROM_ZERO = {
    "OneBillion": "1e9 + (i % 2)",  # the engine's var: 21642.6, not 0.25
    "Constant": "1234567.891",  # var 0.164, not 0
    "Million": "1e6 + (i % 2 == 0 ? 0.01 : -0.01)",  # var 0.0, not 1e-4
    "NearLongMax": "(long)(1.7e18) + (i % 1000) * 12345L",  # a Java long sum wraps: mean 4.03e13, variance < 0
    "EpochNanos": "(long)(1.7e18) + i * 1000000007L",
    "Small": "Math.sin(i) * 3 + 2",
}


@pytest.fixture(scope="module")
def far(make_table, to_numpy):
    table = make_table(NUM_ROWS, *(f"{name} = {formula}" for name, formula in FAR_FROM_ZERO.items()))
    return table, {name: to_numpy(table, name) for name in FAR_FROM_ZERO}


def test_moments_far_from_zero_equal_numpy(far):
    table, values = far
    found = moments(table, list(FAR_FROM_ZERO), "test")
    assert values["NearLongMax"].dtype == values["EpochNanos"].dtype == np.int64
    for index, name in enumerate(FAR_FROM_ZERO):
        assert_numpy_moments(found, index, values[name])
    assert found.variance[1] < 1e-12


def test_normalization_of_epoch_nanos_equals_numpy(far):
    table, values = far
    x = values["EpochNanos"].astype(np.float64)
    layer = dh_tf.adapt(keras.layers.Normalization(), table, ["EpochNanos", "OneBillion"])
    np.testing.assert_allclose(layer.adapt_mean.numpy(), np.float32([x.mean(), 1e9 + 0.5]), rtol=1e-7)
    np.testing.assert_allclose(layer.adapt_variance.numpy(), np.float32([x.var(), 0.25]), rtol=1e-6)
    probe = np.stack([x[[0, NUM_ROWS // 2, -1]], [1e9, 1e9 + 1, 1e9]], axis=1).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(probe))
    assert np.isfinite(out).all()  # the engine's variance was negative: sqrt gave NaN for every value
    # float32 (the layer's type) resolves 1.7e18 to 1.4e11, 2.4e-3 of the standard deviation.
    np.testing.assert_allclose(out[:, 0], (x[[0, NUM_ROWS // 2, -1]] - x.mean()) / x.std(), atol=5e-3)


def test_moments_leave_nulls_out_and_keep_nan(make_table, to_numpy):
    table = make_table(
        30_001,
        "L = i % 3 == 0 ? NULL_LONG : (long)(1.7e18) + i * 1000000007L",
        "I = i % 4 == 1 ? NULL_INT : 1000000000 + (i % 5)",
        "S = i % 5 == 2 ? NULL_SHORT : (short)(30000 + i % 7)",
        "F = i % 2 == 0 ? NULL_FLOAT : (float)(1e6 + (i % 3))",
        "D = i < 70000 ? NULL_DOUBLE : 1.0",  # no values: NaN
        "N = i == 7 ? Double.NaN : (i % 3 == 0 ? NULL_DOUBLE : 1e9 + i)",  # a NaN: NaN, as numpy
        "One = i == 5 ? 42.5 : NULL_DOUBLE",
    )
    names = ["L", "I", "S", "F", "D", "N", "One"]
    found = moments(table, names, "test")
    nulls = {"L": NULL_LONG, "I": NULL_INT, "S": NULL_SHORT, "F": -np.finfo(np.float32).max}  # to_numpy keeps sentinels
    for index, name in enumerate(names[:4]):
        x = to_numpy(table, name)
        assert_numpy_moments(found, index, x[x != nulls[name]])
    assert found.count[4] == 0 and np.isnan(found.mean[4]) and np.isnan(found.variance[4])
    assert found.count[5] == 20_000 and np.isnan(found.mean[5]) and np.isnan(found.variance[5])
    assert found.count[6] == 1 and found.mean[6] == 42.5 and found.variance[6] == 0.0


def test_columns_named_like_the_query_columns(make_table):
    table = make_table(1000, "DhTfX0 = 1e9 + (i % 2)", "DhTfPilot0 = (long)i")
    found = moments(table, ["DhTfX0", "DhTfPilot0"], "test")
    np.testing.assert_allclose(found.mean, [1e9 + 0.5, 499.5], rtol=1e-12)
    np.testing.assert_allclose(found.variance, [0.25, (1000**2 - 1) / 12], rtol=1e-12)


def test_a_ticking_table_gives_moments_of_one_update_cycle(server):
    """Every column's statistics come from one cycle: the counts agree, and each mean is that count's."""
    import jpy
    from deephaven import time_table
    from deephaven.liveness_scope import liveness_scope

    context = jpy.get_type("io.deephaven.engine.context.ExecutionContext").getContext()
    graph = jpy.cast(context.getUpdateGraph(), jpy.get_type("io.deephaven.engine.updategraph.impl.PeriodicUpdateGraph"))
    cycle_ms = graph.getTargetCycleDurationMillis()
    columns = [f"C{k}" for k in range(6)]
    graph.setTargetCycleDurationMillis(5)  # many cycles during each call: aggregations on two threads would differ
    try:
        with liveness_scope():  # the ticking table stops with the test
            ticking = time_table("PT0.001S").update([f"C{k} = 1e9 + ii * {k + 1}" for k in range(6)])
            deadline = time.monotonic() + 30
            while ticking.size < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(6):
                found = moments(ticking, columns, "test")
                assert len(set(found.count.tolist())) == 1, found.count
                n = found.count[0]
                np.testing.assert_allclose(found.mean, 1e9 + (n - 1) / 2 * np.arange(1, 7), rtol=1e-12)
                np.testing.assert_allclose(found.variance, (n * n - 1) / 12 * np.arange(1, 7) ** 2, rtol=1e-9)
    finally:
        graph.setTargetCycleDurationMillis(cycle_ms)


# --- remote tables ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(server, far):
    publish("exact_moments_far", far[0])
    session = connect(server.test_port)
    yield session
    session.close()


def test_remote_moments_far_from_zero_equal_numpy(session, far):
    _, values = far
    table = session.open_table("exact_moments_far")
    empty = table.where("Id < 0")
    before = server_exports(session)
    found = moments(table, list(FAR_FROM_ZERO), "test")
    for index, name in enumerate(FAR_FROM_ZERO):
        assert_numpy_moments(found, index, values[name])
    nothing = moments(empty, ["EpochNanos"], "test")
    assert nothing.count.tolist() == [0] and np.isnan(nothing.mean[0])
    assert server_exports(session) == before  # the uploaded pilots, the joins and the aggregations released
