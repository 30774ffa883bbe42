"""Multi-input Keras model: a dict of features, a DQL-derived column and a DQL validation split.

Paste this file into the Deephaven IDE console, or run ``python examples/multi_input.py`` (which
starts an embedded server). Environment variables: DH_TF_EXAMPLE_ROWS (default 1,000,000),
DH_TF_EXAMPLE_HEAP and DH_TF_EXAMPLE_PORT (the embedded server, plain-Python runs only).
"""

import os

from dh_tf.server import ensure_server

# The IDE console already runs the engine; plain `python` starts the embedded server first
# (deephaven can only be imported once a JVM runs).
ensure_server(
    heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "256m"), port=int(os.environ.get("DH_TF_EXAMPLE_PORT", "10000"))
)
import keras
from deephaven import empty_table

import dh_tf

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "1000000"))
SEED = 11

# Three numeric columns, a deterministic hash of the row position in (-1, 1). `update_view` computes
# formulas when rows are read, so these columns take no memory.
events = empty_table(NUM_ROWS).update_view(
    [
        "Id = (long)i",
        "A = (Math.sin((i + 1) * 12.9898) * 43758.5453) % 1.0",
        "B = (Math.sin((i + 1) * 78.233) * 43758.5453) % 1.0",
        "C = (Math.sin((i + 1) * 37.719) * 43758.5453) % 1.0",
    ]
)
# A Boolean flag, a derived feature and the label, all in DQL with `update_view` (computed as read,
# never stored): the flag flips the sign of the rule, so the model needs both inputs to predict it.
events = events.update_view(
    ["Flag = (Id % 3 == 0)", "AB = A * B", "Label = ((Flag ? 1 : -1) * (A + AB - 0.5 * C) > 0) ? 1 : 0"]
)

# The validation split is a DQL filter as well: one row in five, by id.
train = events.where("Id % 5 != 0")
val = events.where("Id % 5 == 0")

# A dict of features gives a dict of arrays per batch: "numeric" [batch, 4] and "flag" [batch]
# (Boolean columns arrive as 0/1). Keras feeds each to the Input of the same name.
FEATURES = {"numeric": ["A", "B", "C", "AB"], "flag": "Flag"}
train_ds = dh_tf.to_dataset(train, FEATURES, "Label", batch_size=512, shuffle=True, seed=SEED)
val_ds = dh_tf.to_dataset(val, FEATURES, "Label", batch_size=4096)

keras.utils.set_random_seed(SEED)
numeric_in = keras.Input(shape=(4,), name="numeric")
flag_in = keras.Input(shape=(), name="flag")
flag_column = keras.layers.Reshape((1,))(flag_in)  # [batch] -> [batch, 1], to concatenate
hidden = keras.layers.Concatenate()([numeric_in, flag_column, keras.layers.Multiply()([numeric_in, flag_column])])
hidden = keras.layers.Dense(32, activation="relu")(hidden)
output = keras.layers.Dense(1, activation="sigmoid", name="label")(hidden)
model = keras.Model(inputs={"numeric": numeric_in, "flag": flag_in}, outputs=output)
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])

initial_loss, initial_accuracy = model.evaluate(val_ds, verbose=0)
# shuffle=False: the dataset already shuffles (seeded, per epoch); Keras would only warn it can't.
history = model.fit(train_ds, validation_data=val_ds, epochs=2, shuffle=False, verbose=2)

val_loss = history.history["val_loss"][-1]
val_accuracy = history.history["val_accuracy"][-1]
print(f"rows: train {train.size:,}, validation {val.size:,}; inputs {sorted(model.input)}")
print(f"validation loss {initial_loss:.4f} -> {val_loss:.4f}, accuracy {initial_accuracy:.3f} -> {val_accuracy:.3f}")
assert train.size + val.size == events.size and val.size == (events.size + 4) // 5
assert val_loss < initial_loss, "the validation loss did not fall"
assert val_accuracy > 0.8, f"validation accuracy too low: {val_accuracy:.3f}"
print(f"dh_tf example OK: multi_input trained on {train.size:,} rows, validation accuracy {val_accuracy:.3f}")
