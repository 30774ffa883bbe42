"""Sequence model: an LSTM predicts the next move (up/down) of a time series from a DQL rolling window.

Deephaven builds the windows server-side: ``update_by(rolling_group_tick(...))`` turns each row into
the last WINDOW values of a column (a ``DoubleVector`` cell), and dh_tf reads a list of such array
columns as ``[batch, WINDOW, features]``, what Keras ``LSTM`` takes. The train/test split is a DQL
filter on the ``Timestamp`` column. Paste this file into the Deephaven IDE console, or run
``python examples/lstm_windows.py`` (which starts an embedded server). Environment variables:
DH_TF_EXAMPLE_ROWS (default 20,000 minutes of data), DH_TF_EXAMPLE_HEAP and DH_TF_EXAMPLE_PORT (the
embedded server, plain-Python runs only).
"""

import os

from dh_tf.server import ensure_server

# The IDE console already runs the engine; plain `python` starts the embedded server first
# (deephaven can only be imported once a JVM runs).
ensure_server(
    heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "512m"), port=int(os.environ.get("DH_TF_EXAMPLE_PORT", "10000"))
)
import keras
import numpy as np
from deephaven import new_table
from deephaven.column import double_col
from deephaven.updateby import rolling_group_tick

import dh_tf

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "20000"))
WINDOW = 16
SEED = 3

# 1. A synthetic minute series whose returns depend on the last three (an AR(3) process), so the
#    next move is partly predictable from a window, but not by repeating the last move.
rng = np.random.default_rng(SEED)
noise = rng.standard_normal(NUM_ROWS)
returns = np.zeros(NUM_ROWS)
for t in range(3, NUM_ROWS):
    returns[t] = -0.3 * returns[t - 1] + 0.4 * returns[t - 2] + 0.3 * returns[t - 3] + noise[t]
series = new_table([double_col("Ret", returns)]).update(
    [
        "Timestamp = '2024-01-02T09:30:00 ET' + ii * MINUTE",
        "AbsRet = Math.abs(Ret)",
        "Up = Ret_[ii + 1] > 0 ? 1 : 0",  # the label: does the *next* minute go up? (the last row has none)
    ]
).head(NUM_ROWS - 1)

# 2. Rolling windows in DQL: each row gets the last WINDOW values of Ret and AbsRet (itself included).
#    The first WINDOW - 1 rows hold shorter windows: keep full ones (dh_tf checks every row's length).
windows = series.update_by(rolling_group_tick(["WRet = Ret", "WAbs = AbsRet"], rev_ticks=WINDOW)).where(
    f"len(WRet) == {WINDOW}"
)

# 3. Split by time with DQL: the first 80% of minutes train; the test set starts a window later, so
#    no test window shares a minute with the training data.
split_minute = int(0.8 * NUM_ROWS)
start = "'2024-01-02T09:30:00 ET'"
train = windows.where(f"Timestamp < {start} + {split_minute} * MINUTE")
test = windows.where(f"Timestamp >= {start} + {split_minute + WINDOW} * MINUTE")

# A list of array columns -> [batch, WINDOW, 2]: timesteps x features.
FEATURES = ["WRet", "WAbs"]
train_ds = dh_tf.to_dataset(train, FEATURES, "Up", batch_size=128, shuffle=True, seed=SEED, label_dtype="float32")
test_ds = dh_tf.to_dataset(test, FEATURES, "Up", batch_size=1024, label_dtype="float32")
assert train_ds.element_spec[0].shape.as_list() == [None, WINDOW, 2]

keras.utils.set_random_seed(SEED)
model = keras.Sequential(
    [
        keras.Input(shape=(WINDOW, 2)),
        keras.layers.LSTM(16),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"])
initial_loss, _ = model.evaluate(test_ds, verbose=0)
# shuffle=False: the dataset already shuffles (seeded, per epoch); Keras would only warn it can't.
history = model.fit(train_ds, validation_data=test_ds, epochs=4, shuffle=False, verbose=2)
test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)

# Naive baselines on the same test rows: always the majority move, and "the next move repeats the last".
last_and_next = dh_tf.TableLoader(test, "Ret", "Up", batch_size=test.size, page_rows=max(1, test.size))
last, up = next(iter(last_and_next))
majority = max(up.mean(), 1 - up.mean())
repeat_last = ((last > 0) == (up == 1)).mean()
baseline = max(majority, repeat_last)
print(f"rows: train {train.size:,}, test {test.size:,}; input {model.input_shape}")
print(f"test loss {initial_loss:.4f} -> {test_loss:.4f}; accuracy {test_accuracy:.3f} vs naive baselines: "
      f"majority {majority:.3f}, repeat last move {repeat_last:.3f}")
assert train.size + test.size == windows.size - WINDOW
assert test_loss < initial_loss, "the test loss did not fall"
assert test_accuracy > baseline + 0.05, f"accuracy {test_accuracy:.3f} does not beat the naive baseline {baseline:.3f}"
print(f"dh_tf example OK: lstm_windows trained on {train.size:,} windows of {WINDOW}, "
      f"test accuracy {test_accuracy:.3f} (naive baseline {baseline:.3f})")
