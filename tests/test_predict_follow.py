"""Live scoring (NOTE [ Live scoring ] in dh_tf/write/predict_follow.py): predictions tick as input rows arrive.

Every wait is a condition with a generous deadline (a loaded 2-core machine); nothing asserts speed.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import test_follow
from test_follow import DEADLINE_S, Publisher, assert_clean

from dh_tf.write.predict_follow import THREAD_NAME, predict_follow

fast_update_graph = test_follow.fast_update_graph  # the same module fixture: 10 ms update cycles
pytestmark = pytest.mark.usefixtures("fast_update_graph")

MAX_WAIT_S = 0.2
WAIT_S = 4 * DEADLINE_S  # a deadline for conditions, not a speed bound


@pytest.fixture(scope="module")
def model():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(4, activation="relu"), tf.keras.layers.Dense(1)])
    model.predict_on_batch(np.zeros((3, 2), np.float32))  # traced once, before any latency is measured
    return model


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def wait_rows(table, rows: int) -> None:
    wait_until(lambda: table.size >= rows, f"{rows} predictions (got {table.size})")


def scoring_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_every_new_row_scored_once_in_order_with_the_model_output(model):
    from deephaven.numpy import to_numpy

    source = Publisher(chunks=1, rows=1)
    source.publish(5)  # present before: not scored (start="now")
    wait_rows(source.table, 5)
    live = predict_follow(model, source.table, ["X", "B"], keep="Id", batch_size=64, max_wait=MAX_WAIT_S)
    try:
        for rows in (100, 30, 7):  # full batches and a remainder; partial batches flushed by max_wait
            source.publish(rows)
            wait_rows(live.table, source.published - 5)
        snapshot = live.table.snapshot()
        ids = to_numpy(snapshot, ["Id"])[:, 0]
        predictions = to_numpy(snapshot, ["Prediction"])[:, 0]
    finally:
        assert live.stop() is True
    assert snapshot.size == source.published - 5  # each row once
    np.testing.assert_array_equal(ids, np.arange(5, source.published))
    x = np.stack([ids / 2, -ids / 2], axis=1).astype(np.float32)
    np.testing.assert_allclose(predictions, model.predict(x, verbose=0)[:, 0], rtol=1e-6, atol=1e-6)
    assert live.scored_rows == source.published - 5 and live.error is None
    assert live.table.columns[0].data_type.j_name == "long"
    assert live.table.columns[1].data_type.j_name == "float"  # the model's float32
    assert scoring_threads() == []
    assert_clean(source.table)


def test_predict_follow_on_a_blink_table_with_k_outputs():
    from deephaven.numpy import to_numpy

    source = Publisher(chunks=1, rows=1, append_only=False)
    with predict_follow(lambda x: np.stack([x[:, 0] * 2, x[:, 1] + 1], axis=1), source.table, ["X", "B"],
                        keep=["Id"], output=["Double", "PlusOne"], batch_size=16, max_wait=MAX_WAIT_S) as live:
        source.publish(40)  # listening started in predict_follow: a blink table's rows are seen
        wait_rows(live.table, 40)
        snapshot = live.table.snapshot()
        values = np.stack([to_numpy(snapshot, [name])[:, 0] for name in ("Id", "Double", "PlusOne")], axis=1)
    ids = np.arange(40)
    np.testing.assert_array_equal(values[:, 0], ids)
    np.testing.assert_allclose(values[:, 1], ids)
    np.testing.assert_allclose(values[:, 2], -ids / 2 + 1)
    assert_clean(source.table)


def test_predict_follow_bad_input():
    source = Publisher(chunks=1, rows=1)
    with pytest.raises(ValueError, match=r"predict_follow: keep must name columns of the table \(got unknown \['Nope'\]"):
        predict_follow(abs, source.table, ["X"], keep="Nope")
    with pytest.raises(ValueError, match=r"keep must not name an output column \(got \['Id'\], also in output\)"):
        predict_follow(abs, source.table, ["X"], keep="Id", output="Id")
    with pytest.raises(ValueError, match=r"predict_follow: output must name each column once \(got \['A'\] twice\)"):
        predict_follow(abs, source.table, ["X"], output=["A", "A"])
    with pytest.raises(ValueError, match=r"max_wait must be a number of seconds >= 0"):
        predict_follow(abs, source.table, ["X"], max_wait=-0.1)
    assert_clean(source.table)


def test_stop_is_bounded_when_the_model_call_is_stuck_and_nothing_is_published_after_it():
    source = Publisher(chunks=1, rows=1)
    entered, release = threading.Event(), threading.Event()

    def stuck(x):
        if len(x):  # the zero-row call that fixes the schema passes (NOTE [ Live output schema ])
            entered.set()
            release.wait(WAIT_S)
        return x[:, 0]

    live = predict_follow(stuck, source.table, ["X", "B"], keep="Id", batch_size=8, max_wait=MAX_WAIT_S)
    stopped: list[bool] = []
    try:
        source.publish(8)
        assert entered.wait(WAIT_S), "the model was never called"
        stopper = threading.Thread(target=lambda: stopped.append(live.stop(timeout_s=0.05)), daemon=True)
        stopper.start()
        stopper.join(WAIT_S)
        assert stopped == [False], "stop() did not return while the model call was stuck"
        assert [t.daemon for t in scoring_threads()] == [True]
        assert live.close(timeout_s=0) is False  # close is stop, again
    finally:
        release.set()
    wait_until(lambda: not scoring_threads(), "the scoring thread to end once the model call returned")
    assert live.stop() is True and live.error is None
    assert live.scored_rows == 0 and live.table.size == 0  # the batch scored after stop() is dropped
    assert_clean(source.table)


def test_close_and_the_context_manager_stop_scoring():
    source = Publisher(chunks=1, rows=1)
    live = predict_follow(lambda x: x[:, 0], source.table, ["X"], max_wait=MAX_WAIT_S)
    source.publish(3)
    wait_rows(live.table, 3)
    assert live.close() is True and scoring_threads() == []
    with predict_follow(lambda x: x[:, 0], source.table, ["X"], max_wait=MAX_WAIT_S) as again:
        assert scoring_threads()
    assert scoring_threads() == [] and again.stop() is True
    with pytest.raises(ValueError, match=r"LivePredictions.stop: timeout_s must be a number of seconds >= 0"):
        again.stop(timeout_s=-1)
    assert_clean(source.table)


def test_model_dtypes_and_a_multi_output_dict():
    import keras
    from deephaven.numpy import to_numpy

    source = Publisher(chunks=1, rows=1)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, {"p": keras.layers.Dense(2, name="p")(inputs),
                                 "v": keras.layers.Dense(1, name="v", dtype="float64")(inputs)})
    spec = {"p": ["P0", "P1"], "v": "V"}
    with predict_follow(model, source.table, ["X", "B"], keep="Id", output=spec, batch_size=16,
                        max_wait=MAX_WAIT_S) as live:
        assert {c.name: c.data_type.j_name for c in live.table.columns} == {
            "Id": "long", "P0": "float", "P1": "float", "V": "double"}
        source.publish(21)
        wait_rows(live.table, 21)
        snapshot = live.table.snapshot()
    ids = to_numpy(snapshot, ["Id"])[:, 0]
    np.testing.assert_array_equal(ids, np.arange(21))
    expected = model.predict(np.stack([ids / 2, -ids / 2], axis=1).astype(np.float32), verbose=0)
    np.testing.assert_allclose(to_numpy(snapshot, ["P1"])[:, 0], expected["p"][:, 1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_numpy(snapshot, ["V"])[:, 0], expected["v"][:, 0], rtol=1e-12, atol=1e-12)

    def labels(x):  # a callable's dict of int outputs
        return {"label": (x[:, 0] * 2).astype(np.int32), "big": x[:, 0].astype(np.int64) * 10**10}

    with predict_follow(labels, source.table, ["X"], output={"big": "Big", "label": "Label"},
                        max_wait=MAX_WAIT_S) as live:
        assert {c.name: c.data_type.j_name for c in live.table.columns} == {"Label": "int", "Big": "long"}
        first = source.published
        source.publish(10)
        wait_rows(live.table, 10)
        snapshot = live.table.snapshot()
    np.testing.assert_array_equal(to_numpy(snapshot, ["Label"])[:, 0], np.arange(first, first + 10))
    assert_clean(source.table)


def test_output_names_and_shapes_are_checked_in_the_callers_thread():
    import keras

    source = Publisher(chunks=1, rows=1)
    with pytest.raises(ValueError, match=r"predict_follow: output must name valid Deephaven columns \(got 'my score'"):
        predict_follow(abs, source.table, ["X"], output="my score")
    inputs = keras.Input((2,))
    two = keras.Model(inputs, {"p": keras.layers.Dense(2)(inputs), "q": keras.layers.Dense(1)(inputs)})
    with pytest.raises(ValueError, match=r"predict_follow: output must have one entry per model output \['p', 'q'\]"):
        predict_follow(two, source.table, ["X", "B"], output={"p": ["A0", "A1"]})
    with pytest.raises(ValueError, match=r"output must name one column per column of the model's output of shape \[n, 2\]"):
        predict_follow(lambda x: np.zeros((len(x), 2), np.float32), source.table, ["X"], output="P")
    with pytest.raises(TypeError, match=r"predict_follow: model outputs must be numeric or boolean \(got dtype <U1\)"):
        predict_follow(lambda x: np.full(len(x), "a"), source.table, ["X"])
    with pytest.raises(TypeError, match=r"predict_follow: batch_size must be an int >= 1 \(got '8' of type str\)"):
        predict_follow(abs, source.table, ["X"], batch_size="8")
    assert scoring_threads() == []
    assert_clean(source.table)


def test_a_callable_that_cannot_score_zero_rows_gets_double_columns():
    from deephaven.numpy import to_numpy

    source = Publisher(chunks=1, rows=1)

    def no_empty(x):
        assert len(x), "zero rows"
        return x.astype(np.float32) * 2

    with predict_follow(no_empty, source.table, ["X", "B"], output=["A", "B2"], max_wait=MAX_WAIT_S) as live:
        assert [c.data_type.j_name for c in live.table.columns] == ["double", "double"]
        source.publish(4)
        wait_rows(live.table, 4)
        np.testing.assert_array_equal(to_numpy(live.table.snapshot(), ["A"])[:, 0], np.arange(4.0))
    assert_clean(source.table)
