"""Live scoring (NOTE [ Live scoring ] in dh_tf/predict_follow.py): predictions tick as input rows arrive."""

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
SLACK_S = 1.0  # scoring one batch and a loaded 2-core machine; the promise is max_wait + one cycle + scoring


@pytest.fixture(scope="module")
def model():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(4, activation="relu"), tf.keras.layers.Dense(1)])
    model.predict_on_batch(np.zeros((3, 2), np.float32))  # traced once, before any latency is measured
    return model


def wait_rows(table, rows: int) -> float:
    start = time.monotonic()
    while table.size < rows:
        assert time.monotonic() - start < DEADLINE_S, f"only {table.size} of {rows} predictions arrived"
        time.sleep(0.005)
    return time.monotonic() - start


def test_predictions_tick_for_new_rows_within_max_wait(model):
    from deephaven.numpy import to_numpy

    source = Publisher(chunks=1, rows=1)
    source.publish(5)  # present before: not scored (start="now")
    wait_rows(source.table, 5)
    live = predict_follow(model, source.table, ["X", "B"], keep="Id", batch_size=64, max_wait=MAX_WAIT_S)
    try:
        latencies = []
        for rows in (100, 30, 7):  # full batches and a remainder; partial batches flushed by max_wait
            source.publish(rows)
            latencies.append(wait_rows(live.table, source.published - 5))
        assert max(latencies) < MAX_WAIT_S + SLACK_S, latencies
        print(f"predict_follow latencies (s): {[round(t, 3) for t in latencies]}")
        snapshot = live.table.snapshot()
        ids = to_numpy(snapshot, ["Id"])[:, 0]
        predictions = to_numpy(snapshot, ["Prediction"])[:, 0]
    finally:
        live.stop()
    np.testing.assert_array_equal(ids, np.arange(5, source.published))
    x = np.stack([ids / 2, -ids / 2], axis=1).astype(np.float32)
    np.testing.assert_allclose(predictions, model.predict(x, verbose=0)[:, 0], rtol=1e-6, atol=1e-6)
    assert live.scored_rows == source.published - 5 and live.error is None
    assert live.table.columns[0].data_type.j_name == "long"
    assert [t for t in threading.enumerate() if t.name == THREAD_NAME] == []
    assert_clean(source.table)


def test_predict_follow_on_a_blink_table_with_k_outputs():
    from deephaven.numpy import to_numpy

    source = Publisher(chunks=1, rows=1, append_only=False)
    with predict_follow(lambda x: np.stack([x[:, 0] * 2, x[:, 1] + 1], axis=1), source.table, ["X", "B"],
                        keep=["Id"], output=["Double", "PlusOne"], batch_size=16, max_wait=MAX_WAIT_S) as live:
        time.sleep(0.05)
        source.publish(40)
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
    with pytest.raises(ValueError, match=r"keep names unknown column 'Nope'"):
        predict_follow(abs, source.table, ["X"], keep="Nope")
    with pytest.raises(ValueError, match=r"output names clash with keep columns \['Id'\]"):
        predict_follow(abs, source.table, ["X"], keep="Id", output="Id")
    with pytest.raises(ValueError, match=r"output must be a column name or a list of distinct names \(got \['A', 'A'\]\)"):
        predict_follow(abs, source.table, ["X"], output=["A", "A"])
    with pytest.raises(ValueError, match=r"max_wait must be a number of seconds >= 0"):
        predict_follow(abs, source.table, ["X"], max_wait=-0.1)
    assert_clean(source.table)
