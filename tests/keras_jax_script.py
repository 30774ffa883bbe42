"""Keras 3 on JAX with TensorFlow blocked from import, for tests/test_keras_jax.py.

argv: PORT OUT_JSON. A ``sys.meta_path`` finder makes ``import tensorflow`` fail before anything is
imported, as if TensorFlow were not installed. Runs examples/keras_jax.py, then: a fit whose steps
record the ids they trained on (``jax.debug.callback``), next to the same TableLoader's epochs; a fit
with SyncEpochs; evaluate with sample weights and predict in row order; the refusals. Writes the
facts as JSON; the test asserts them.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import runpy
import sys


class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name} is blocked: Keras on JAX must not need it")
        return None


sys.meta_path.insert(0, BlockTensorFlow())
os.environ["KERAS_BACKEND"] = "jax"
port, out_path = sys.argv[1], sys.argv[2]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.update(DH_TF_EXAMPLE_ROWS="20000", DH_TF_EXAMPLE_PORT=port)

from dh_tf.server import start_server  # noqa: E402

start_server(heap="512m", port=int(port))
example = runpy.run_path(os.path.join(REPO, "examples", "keras_jax.py"), run_name="__main__")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from deephaven import empty_table  # noqa: E402

import dh_tf  # noqa: E402

NUM_ROWS, BATCH, SEED, EPOCHS = 200, 32, 5, 3  # 7 batches per epoch, the last of 8 rows
table = empty_table(NUM_ROWS).update(
    ["Id = (long)i", "X = (double)((i * 37) % 101) / 101.0", "Y = 3 * X + 1", "Zero = 0.0", "W = (i % 2 == 0) ? 1.0 : 0.0"]
)
FEATURES = {"x": ["X"], "id": "Id"}
OPTIONS = {"batch_size": BATCH, "page_rows": 64, "dtype": {"id": "int32"}}
facts: dict = {"backend": keras.backend.backend(), "example_loss": example["history"].history["loss"]}
trained: list[list[int]] = []


class RecordIds(keras.layers.Layer):
    """Passes x on; in a training step, records the ids of the step's rows, in order."""

    def call(self, inputs, training=False):
        x, ids = inputs
        if training:
            jax.debug.callback(lambda i: trained.append([int(v) for v in np.asarray(i)]), ids, ordered=True)
        return x


keras.utils.set_random_seed(SEED)
x_in = keras.Input(shape=(1,), name="x")
id_in = keras.Input(shape=(), dtype="int32", name="id")
model = keras.Model({"x": x_in, "id": id_in}, keras.layers.Dense(1)(RecordIds()([x_in, id_in])))
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")

ds = dh_tf.to_py_dataset(table, FEATURES, "Y", shuffle=True, seed=SEED, **OPTIONS)
facts["len"] = len(ds)
history = model.fit(ds, epochs=EPOCHS, shuffle=False, verbose=0)
jax.effects_barrier()
facts["loss"] = history.history["loss"]
facts["trained"] = trained[:]
facts["state_after_fit"] = {k: ds.loader.state_dict()[k] for k in ("epoch", "batches")}

reference = dh_tf.TableLoader(table, "Id", shuffle=True, seed=SEED, batch_size=BATCH, page_rows=64)
facts["reference"] = []
for epoch in range(EPOCHS):
    reference.set_epoch(epoch)
    facts["reference"] += [[int(i) for i in batch] for batch in reference]

trained.clear()
model.fit(ds, epochs=2, shuffle=False, verbose=0, callbacks=[dh_tf.SyncEpochs(ds.loader)])
jax.effects_barrier()
facts["trained_sync"] = trained[:]

id_model = keras.Model({"x": x_in, "id": id_in}, keras.ops.expand_dims(keras.ops.cast(id_in, "float32"), -1))
id_model.compile(loss="mse")
weighted = dh_tf.to_py_dataset(table, FEATURES, ["Zero"], sample_weight="W", **OPTIONS)
facts["evaluate"] = float(id_model.evaluate(weighted, verbose=0))
facts["predict"] = id_model.predict(dh_tf.to_py_dataset(table, FEATURES, **OPTIONS), verbose=0)[:, 0].tolist()

try:
    model.fit(ds, epochs=1, verbose=0)  # Keras' default shuffle=True
except dh_tf.UsageError as e:
    facts["shuffle_error"] = str(e)
try:
    dh_tf.to_py_dataset(table, FEATURES, "Y", workers=4)
except dh_tf.ArgumentError as e:
    facts["workers_error"] = str(e)
try:
    dh_tf.to_py_dataset(table, FEATURES, "Y", use_multiprocessing=True)
except dh_tf.ArgumentError as e:
    facts["multiprocessing_error"] = str(e)

facts["tensorflow_imported"] = "tensorflow" in sys.modules
with open(out_path, "w") as f:
    json.dump(facts, f)
print("finished")
sys.stdout.flush()
os._exit(0)  # NOTE: leave at once; interpreter shutdown with the embedded JVM can crash in finalizers
