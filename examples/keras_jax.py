"""Keras 3 on JAX: train a model from a Deephaven table without TensorFlow, through dh_tf.to_py_dataset.

Run ``python examples/keras_jax.py`` (it starts an embedded server) with ``pip install 'dh-tf[server,jax]'``;
TensorFlow need not be installed. ``KERAS_BACKEND`` picks the backend when Keras is first imported
(default here: jax; ``torch`` and ``tensorflow`` work the same). In the IDE console Keras was imported
already, so it runs on that backend. Environment variables: DH_TF_EXAMPLE_ROWS (default 100,000),
DH_TF_EXAMPLE_HEAP and DH_TF_EXAMPLE_PORT (the embedded server, plain-Python runs only).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before the first `import keras`

from dh_tf.server import ensure_server

# The IDE console already runs the engine; plain `python` starts the embedded server first
# (deephaven can only be imported once a JVM runs).
ensure_server(
    heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "256m"), port=int(os.environ.get("DH_TF_EXAMPLE_PORT", "10000"))
)
import keras
import numpy as np
from deephaven import empty_table
from deephaven.numpy import to_numpy

import dh_tf

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "100000"))
SEED = 3

# Two numeric features (a deterministic hash of the row position in (-1, 1)), a category code and a
# label that needs all three; `update_view` computes them as rows are read.
table = empty_table(NUM_ROWS).update_view(
    [
        "Id = (long)i",
        "A = (Math.sin((i + 1) * 12.9898) * 43758.5453) % 1.0",
        "B = (Math.sin((i + 1) * 78.233) * 43758.5453) % 1.0",
        "Kind = (int)(Id % 4)",
        "Label = ((Kind < 2 ? A : -A) + 0.5 * B > 0) ? 1 : 0",
    ]
)
train, val = dh_tf.split(table, [0.8, 0.2], seed=SEED)

# A dict of inputs: the numeric features and the integer category (kept integer by `dtype`).
features = {"num": ["A", "B"], "kind": "Kind"}
train_ds = dh_tf.to_py_dataset(train, features, "Label", batch_size=512, shuffle=True, seed=SEED, dtype={"kind": "int32"})
val_ds = dh_tf.to_py_dataset(val, features, "Label", batch_size=2048, dtype={"kind": "int32"})

keras.utils.set_random_seed(SEED)
num = keras.Input(shape=(2,), name="num")
kind = keras.Input(shape=(), dtype="int32", name="kind")
hidden = keras.layers.Concatenate()([num, keras.layers.Embedding(4, 4)(kind)])
hidden = keras.layers.Dense(32, activation="relu")(hidden)
model = keras.Model({"num": num, "kind": kind}, keras.layers.Dense(1, activation="sigmoid")(hidden))
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])

# shuffle=False: dh_tf shuffles the rows (seeded, per epoch); Keras' own shuffle of batch indices
# is refused, since each epoch's pages are read once, in order.
history = model.fit(train_ds, validation_data=val_ds, epochs=3, shuffle=False, verbose=2)

# predict: one row per table row, in the table's order.
probabilities = model.predict(val_ds, verbose=0)
y_val = to_numpy(val, ["Label"])[:, 0]  # the labels, in row order
val_accuracy = float(np.mean((probabilities[:, 0] > 0.5) == (y_val == 1)))
print(f"Keras backend: {keras.backend.backend()}; rows: train {train.size:,}, validation {val.size:,}")
print(f"loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}, validation accuracy {val_accuracy:.3f}")
assert probabilities.shape == (val.size, 1), probabilities.shape
assert history.history["loss"][-1] < history.history["loss"][0], "the training loss did not fall"
assert val_accuracy > 0.8, f"validation accuracy too low: {val_accuracy:.3f}"
print(f"dh_tf example OK: keras_jax trained on {train.size:,} rows with Keras on {keras.backend.backend()}")
