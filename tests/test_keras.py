"""Keras model.fit on to_dataset: several epochs, validation_data, known steps, and it learns."""

from __future__ import annotations

import numpy as np

import dh_tf


def test_fit_learns_a_simple_target_with_validation(make_table):
    import keras

    table = make_table(
        40_000,
        "X0 = Math.sin(i * 0.37)",
        "X1 = Math.cos(i * 0.91)",
        "X2 = (float)((i * 7919) % 1000) / 1000.0f - 0.5f",
        "Y = (int)(X0 + 2 * X1 - X2 > 0 ? 1 : 0)",
    )
    train = dh_tf.to_dataset(table.where("Id % 5 != 0"), ["X0", "X1", "X2"], "Y", batch_size=256, shuffle=True,
                             seed=5)
    valid = dh_tf.to_dataset(table.where("Id % 5 == 0"), ["X0", "X1", "X2"], "Y", batch_size=1024)
    assert train.cardinality().numpy() == 125 and valid.cardinality().numpy() == 8

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(train, epochs=3, validation_data=valid, verbose=0, shuffle=False)  # dh_tf shuffles
    loss = history.history["loss"]
    assert len(loss) == 3 and loss[-1] < loss[0]
    assert history.history["val_accuracy"][-1] > 0.9
    baseline = np.mean(np.concatenate([y.numpy() for _, y in valid]))
    assert history.history["val_accuracy"][-1] > max(baseline, 1 - baseline) + 0.2
