"""predict_table and predict_follow share one output spec and one scoring loop: the same model and features
give the same result columns, types and values, static or live."""

from __future__ import annotations

import time

import numpy as np
import pytest
import test_follow
from test_follow import DEADLINE_S, Publisher, assert_clean

from dh_tf.write.predict_follow import predict_follow
from dh_tf.write.predict_table import predict_table

fast_update_graph = test_follow.fast_update_graph  # 10 ms update cycles
pytestmark = pytest.mark.usefixtures("fast_update_graph")

ROWS = 50


def models():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((2,))
    multi = keras.Model(inputs, {"p": keras.layers.Dense(2, name="p")(inputs),
                                 "v": keras.layers.Dense(1, name="v", dtype="float64")(inputs)})
    wide = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, dtype="float64")])

    def ints(x):
        return {"label": (x[:, 0] % 4).astype(np.int16), "flag": x[:, 1] > -3}

    return [
        ("multi", multi, {"p": ["P0", "P1"], "v": "V"}),
        ("wide", wide, ["W0", "W1", "W2"]),
        ("ints", ints, {"label": "Label", "flag": "Flag"}),
    ]


@pytest.mark.parametrize("case", range(3), ids=["multi-output keras", "float64 keras", "int callable"])
def test_same_columns_types_and_values_static_and_live(case):
    from deephaven.numpy import to_numpy

    _, model, output = models()[case]
    source = Publisher(chunks=1, rows=1)
    with predict_follow(model, source.table, ["X", "B"], keep="Id", output=output, batch_size=8, max_wait=0.2) as live:
        source.publish(ROWS)
        deadline = time.monotonic() + 4 * DEADLINE_S
        while live.table.size < ROWS:
            assert time.monotonic() < deadline, f"only {live.table.size} of {ROWS} predictions arrived"
            time.sleep(0.005)
        scored_live = live.table.snapshot()
    scored_static = predict_table(model, source.table, ["X", "B"], keep="Id", output=output, batch_size=8)

    def described(table):
        return [(c.name, c.data_type.j_name) for c in table.columns]

    assert described(scored_live) == described(scored_static)
    for name, _ in described(scored_static):
        np.testing.assert_allclose(to_numpy(scored_live, [name])[:, 0], to_numpy(scored_static, [name])[:, 0],
                                   rtol=1e-6, err_msg=name)
    assert_clean(source.table)
