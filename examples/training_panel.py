"""Watch a training in the Deephaven IDE and stop it: dh_tf.training_panel.

Paste this file into the IDE console (the server needs ``pip install 'dh-tf[ide]'``; the Docker image
has it): the command returns at once, training runs in the background, and the panel ``panel``
opens with the learning curves, the epoch and step out of the known number of steps, the ETA, the
rows per second, and a Stop button that ends training after the batch in progress. ``training``
(a ``concurrent.futures.Future`` of the History), ``model`` and ``metrics_table`` stay usable.

Run as ``python examples/training_panel.py``, it starts an embedded server, trains, and does what
the Stop button does once the second epoch has begun (nobody can press it there). Environment
variables: DH_TF_EXAMPLE_ROWS (default 400,000), DH_TF_EXAMPLE_HEAP and DH_TF_EXAMPLE_PORT (the
embedded server, plain-Python runs only).
"""

import os
import sys

from dh_tf.server import ensure_server

# In the IDE console the JVM already runs; plain `python` starts the embedded server first.
in_console = "jpy" in sys.modules and sys.modules["jpy"].has_jvm()
ensure_server(
    heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "512m"), port=int(os.environ.get("DH_TF_EXAMPLE_PORT", "10000"))
)
import time

import keras
from deephaven import empty_table
from deephaven.numpy import to_numpy

import dh_tf

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "400000"))
EPOCHS = 30

# A noisy non-linear regression: Y from two features, a fifth of the rows held out for validation.
data = empty_table(NUM_ROWS).update([
    "Id = (long)i",
    "A = Math.sin(i * 0.37)",
    "B = Math.cos(i * 0.011)",
    "Y = A * B + 0.5 * A * A + 0.05 * Math.sin(i * 7.3)",
])
train = dh_tf.to_dataset(data.where("Id % 5 != 0"), ["A", "B"], "Y", batch_size=256, shuffle=True, seed=1)
val = dh_tf.to_dataset(data.where("Id % 5 == 0"), ["A", "B"], "Y", batch_size=1024)

keras.utils.set_random_seed(1)
model = keras.Sequential([
    keras.Input((2,)),
    keras.layers.Dense(32, activation="relu"),
    keras.layers.Dense(32, activation="relu"),
    keras.layers.Dense(1),
])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])

# A row every 10 steps and at each epoch's end; the val_ columns are filled at epoch ends.
metrics = dh_tf.MetricsTable(every=10, metrics=["loss", "mae", "val_loss", "val_mae"])
metrics_table = metrics.table
# shuffle=False: dh_tf shuffles (shuffle=True above); Keras cannot shuffle a tf.data.Dataset.
training = dh_tf.fit_in_background(model, train, validation_data=val, epochs=EPOCHS, callbacks=[metrics], verbose=0,
                                    shuffle=False)
panel = dh_tf.training_panel(training, metrics, title="dh_tf training")

if in_console:
    print("dh_tf example OK: training_panel started; the panel shows it, its Stop button ends it")
else:
    while training.progress().epoch < 1 and not training.done():
        time.sleep(0.2)
    training.stop()  # what the panel's Stop button does
    history = training.result()
    progress = training.progress()
    assert progress.stop_requested and progress.steps_done < progress.steps_total, progress
    assert history.epoch[-1] == progress.epoch  # the stopped epoch ended (it has its History entry)
    assert metrics.flush()
    last_step = int(to_numpy(metrics_table.view(["Step"]))[-1, 0])
    assert last_step == progress.steps_done, (last_step, progress.steps_done)
    loss = model.evaluate(val, verbose=0)[0]  # the model is usable after the stop
    print(
        f"dh_tf example OK: training_panel stopped at epoch {progress.epoch + 1}/{EPOCHS}, step "
        f"{progress.step}/{progress.steps_per_epoch} ({progress.steps_done} steps); val loss {loss:.4f}"
    )
