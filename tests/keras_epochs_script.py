"""Keras 3 fits for tests/test_keras_epochs.py: records which rows each training step trained on, per case.

argv: PORT OUT_JSON NUM_ROWS. Runs, with no strategy and with a MirroredStrategy over two logical
CPU devices: a plain fit, SyncEpochs after a pass outside fit, a fit stopped mid-epoch and resumed
by ResumableTraining, a resume through load_state_dict + dataset_from_loader, a Keras 3 fit of
distributed_fit_dataset, and to_dataset(follow=True, start="now") of rows published during fit. Writes {case: [[epoch, step, sorted ids], ...]}.
"""

from __future__ import annotations

import json
import sys
import tempfile

port, out_path, num_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])

from dh_tf.server import start_server  # noqa: E402

start_server(heap="512m", port=int(port))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from deephaven import empty_table  # noqa: E402

import dh_tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

BATCH, SEED, EPOCHS = 16, 5, 3
FORMULAS = ["Id = (long)i", "X = (double)(i % 7)", "Y = X * 2"]
position = {"epoch": -1, "step": -1}
records: list[list] = []


def record(ids):
    records.append([position["epoch"], position["step"], sorted(int(i) for i in ids.numpy())])
    return ids


class RecordIds(keras.layers.Layer):
    """Passes X on; in training, records the ids of the rows of this step (both replicas' halves)."""

    def call(self, inputs, training=False):
        if training:
            tf.py_function(record, [inputs[:, 1]], tf.float32)
        return inputs[:, :1]


class Position(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        position["epoch"] = epoch

    def on_train_batch_begin(self, batch, logs=None):
        position["step"] = batch


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.model.stop_training = True


def model_in(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), RecordIds(), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=False)
    return model


def dataset(table):
    return dh_tf.to_dataset(table, ["X", "Id"], "Y", batch_size=BATCH, shuffle=True, seed=SEED, page_rows=64)


def run_case(name, strategy, table, train):
    records.clear()
    train(strategy, table)
    results[name] = list(records)


def plain(strategy, table):
    model_in(strategy).fit(dataset(table), epochs=EPOCHS, callbacks=[Position()], verbose=0)


def sync(strategy, table):
    ds = dataset(table)
    ds.take(1).reduce(0.0, lambda a, _: a)  # a pass outside fit uses loader epoch 0: SyncEpochs puts it back
    model_in(strategy).fit(ds, epochs=EPOCHS, callbacks=[dh_tf.SyncEpochs(ds), Position()], verbose=0)


def resumable(strategy, table):
    directory = tempfile.mkdtemp()
    dh_tf.ResumableTraining(directory, every=2).fit(
        model_in(strategy), dataset(table), epochs=EPOCHS, callbacks=[Position(), StopAt(1, 4)], verbose=0)
    dh_tf.ResumableTraining(directory, every=2).fit(
        model_in(strategy), dataset(table), epochs=EPOCHS, callbacks=[Position()], verbose=0)


def load_state(strategy, table):
    loader = dataset(table).dh_tf_loader
    loader.load_state_dict(loader.state_dict(epoch=1, batches=5))
    model = model_in(strategy)
    model.fit(dh_tf.dataset_from_loader(loader), epochs=2, initial_epoch=1, callbacks=[Position()], verbose=0)
    model.fit(dh_tf.dataset_from_loader(loader), epochs=EPOCHS, initial_epoch=2, callbacks=[Position()], verbose=0)


def distributed(strategy, table):
    data = dh_tf.distributed_fit_dataset(strategy, table, ["X", "Id"], "Y", batch_size=BATCH, shuffle=True,
                                         seed=SEED, page_rows=64)
    model_in(strategy).fit(data.dataset, steps_per_epoch=data.steps_per_epoch, epochs=EPOCHS,
                           callbacks=[Position()], verbose=0)


def follow_now(strategy, _):
    """to_dataset(follow=True, start="now") of a table whose rows arrive during fit: the peek may lose none of them."""
    import threading
    import time

    from deephaven import dtypes, new_table
    from deephaven.column import double_col, long_col
    from deephaven.execution_context import get_exec_ctx
    from deephaven.stream import blink_to_append_only
    from deephaven.stream.table_publisher import table_publisher

    blink, publisher = table_publisher("dh_tf-keras-epochs", {"Id": dtypes.int64, "X": dtypes.double})
    live, context = blink_to_append_only(blink), get_exec_ctx()
    ds = dh_tf.to_dataset(live, ["X", "Id"], "X", follow=True, batch_size=BATCH, start="now", max_rows=FOLLOW_ROWS)
    halt = threading.Event()

    def publish():  # twice the rows the dataset takes: a pass that lost rows still ends, with the wrong ones
        with context:
            for first in range(0, 2 * FOLLOW_ROWS, BATCH):
                if halt.is_set():
                    return
                ids = list(range(first, first + BATCH))
                publisher.add(new_table([long_col("Id", ids), double_col("X", [i % 7 for i in ids])]))
                time.sleep(0.05)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        model_in(strategy).fit(ds, epochs=1, callbacks=[Position()], verbose=0)
    finally:
        halt.set()
        thread.join(30)


FOLLOW_ROWS = 160
results: dict[str, list] = {}
table = empty_table(num_rows).update(FORMULAS)
tiny = empty_table(3 * BATCH).update(FORMULAS)  # 3 batches: the peek's read-ahead reads the whole epoch
strategies = {"none": tf.distribute.get_strategy(), "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
for strategy_name, strategy in strategies.items():
    for case in (plain, sync, resumable, load_state, distributed):
        run_case(f"{strategy_name}/{case.__name__}", strategy, table, case)
    run_case(f"{strategy_name}/tiny", strategy, tiny, plain)
    run_case(f"{strategy_name}/follow", strategy, None, follow_now)

# steps_per_epoch other than an epoch's batches with an epoch-exact callback: refused, naming it.
refusals = {}
for name, make in (("sync", lambda ds: dh_tf.SyncEpochs(ds)),
                   ("resumable", lambda ds: dh_tf.ResumableTraining(tempfile.mkdtemp()))):
    ds = dataset(table)
    try:
        if name == "sync":
            model_in(strategies["none"]).fit(ds.repeat(), steps_per_epoch=4, epochs=2, callbacks=[make(ds)], verbose=0)
        else:
            make(ds).fit(model_in(strategies["none"]), ds.dh_tf_loader, epochs=2, steps_per_epoch=4, verbose=0)
        refusals[name] = "no error"
    except dh_tf.UsageError as error:
        refusals[name] = str(error)
results["refusals"] = refusals

with open(out_path, "w") as out:
    json.dump(results, out)
print("finished")
