"""A training run for tests/test_resume.py: records the ids it trains on, step by step, and may SIGKILL itself.

argv: PORT PARQUET CHECKPOINT_DIR LOG_FILE KILL_AT ("epoch:batch" or "-")
"""

from __future__ import annotations

import os
import signal
import sys

port, parquet_path, checkpoint, log_file, kill_at = sys.argv[1:6]

from dh_tf.server import start_server  # noqa: E402

start_server(heap="512m", port=int(port))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from deephaven import parquet  # noqa: E402

import dh_tf  # noqa: E402


class RecordIds(keras.layers.Layer):
    """Passes X through and appends the batch's ids to the log at each training step (eager)."""

    def call(self, inputs, training=False):
        if training:
            with open(log_file, "a") as log:
                log.write(" ".join(str(int(i)) for i in np.asarray(inputs[:, 1])) + "\n")
        return inputs[:, :1]


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


table = parquet.read(parquet_path)
run = dh_tf.ResumableTraining(checkpoint, every=5)
ds = dh_tf.to_dataset(table, ["X", "Id"], "Y", batch_size=64, shuffle=True, seed=11, page_rows=640, reader_threads=2)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((2,)), RecordIds(), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse", run_eagerly=True)
callbacks = []
if kill_at != "-":
    callbacks.append(KillAt(*map(int, kill_at.split(":"))))
with open(log_file, "a") as log:
    log.write(f"start {run.saved_state}\n")
run.fit(model, ds, epochs=3, callbacks=callbacks, verbose=0)
# The end state, for comparison with an uninterrupted run: weights and the optimizer's variables.
np.savez(log_file + ".end.npz", *[np.asarray(v) for v in model.weights], *[np.asarray(v) for v in model.optimizer.variables])
print("finished")
