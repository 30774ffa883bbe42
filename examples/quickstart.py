"""Quick start: train a Keras model on a Parquet table bigger than the JVM heap, streamed by dh_tf.

Paste this file into the Deephaven IDE console, or run ``python examples/quickstart.py`` (which
starts an embedded server with a 256 MiB heap, smaller than the table). Environment variables:
DH_TF_EXAMPLE_ROWS (default 4,000,000 rows: 8 double features + an int label, ~300 MB decoded),
DH_TF_EXAMPLE_DIR (where the Parquet file is written once; default ~/.cache/dh_tf),
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
from deephaven import (
    empty_table,
    parquet,
)

import dh_tf
from dh_tf.diagnostics import memory_report

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "4000000"))
FEATURES = [f"X{n}" for n in range(8)]
SEED = 7

# 1. Write the data set once. `update_view` formulas are computed as the writer reads them, page by
#    page, so the table is never materialized in the heap. Features are a deterministic hash of the
#    row position in (-1, 1); the label is a (slightly non-linear) function of them, so it is learnable.
example_dir = os.environ.get("DH_TF_EXAMPLE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dh_tf")
parquet_path = os.path.join(example_dir, f"quickstart-{NUM_ROWS}.parquet")
if not os.path.exists(parquet_path):
    os.makedirs(example_dir, exist_ok=True)
    formulas = (
        ["Id = (long)i"]
        + [f"X{n} = (Math.sin((i + 1) * {12.9898 + 7.233 * n}) * 43758.5453) % 1.0" for n in range(8)]
        + ["Label = (X0 + X1 * X2 - 0.5 * X3 + 0.25 * X4 > 0) ? 1 : 0"]
    )
    parquet.write(empty_table(NUM_ROWS).update_view(formulas), parquet_path)  # via a shadow file, then renamed

# 2. Read it back: a Parquet-backed table, decoded page by page when read (not loaded here).
table = parquet.read(parquet_path)

# 3. Select and split with DQL. `where` only builds a row set over the file: no copy of the data.
filtered = table.where("X7 > -0.9")  # drop ~5% of the rows, just to show a filter
train = filtered.where("Id % 10 != 0")
val = filtered.where("Id % 10 == 0")

# 4. Stream the tables into Keras: each epoch reads pages of rows, shuffled by blocks with `seed`.
train_ds = dh_tf.to_dataset(train, FEATURES, "Label", batch_size=1024, shuffle=True, seed=SEED)
val_ds = dh_tf.to_dataset(val, FEATURES, "Label", batch_size=4096)

keras.utils.set_random_seed(SEED)
model = keras.Sequential(
    [
        keras.Input(shape=(len(FEATURES),)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
initial_loss, initial_accuracy = model.evaluate(val_ds, verbose=0)
# shuffle=False: the dataset already shuffles (seeded, per epoch); Keras would only warn it can't.
history = model.fit(train_ds, validation_data=val_ds, epochs=2, shuffle=False, verbose=2)

val_loss = history.history["val_loss"][-1]
val_accuracy = history.history["val_accuracy"][-1]
memory = memory_report()
decoded_mib = table.size * (8 + 8 * 8 + 4) / 2**20  # Id (long), X0..X7 (double), Label (int)
print(f"rows: table {table.size:,}, train {train.size:,}, validation {val.size:,}")
print(f"table decoded: {decoded_mib:,.0f} MiB; JVM heap: max {memory.heap_max_mib:,.0f} MiB, ", end="")
print(f"peak {memory.heap_peak_mib:,.0f} MiB (sum of pool peaks: an upper bound)")
print(f"validation loss {initial_loss:.4f} -> {val_loss:.4f}, accuracy {initial_accuracy:.3f} -> {val_accuracy:.3f}")
assert train.size + val.size == filtered.size and val.size > 0
assert val_loss < initial_loss, "the validation loss did not fall"
assert val_accuracy > 0.8, f"validation accuracy too low: {val_accuracy:.3f}"
print(f"dh_tf example OK: quickstart trained on {train.size:,} rows, validation accuracy {val_accuracy:.3f}")
