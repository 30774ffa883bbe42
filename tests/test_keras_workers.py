"""Keras fit on many workers: dh_tf.distributed_fit_dataset, and dh_tf's callbacks under tf_keras.

- In this process: the helper's argument errors, its steps per epoch and its epoch mapping (Keras
  epoch e reads loader epoch e) on the default strategy; SyncEpochs and MetricsTable in a real
  ``tf_keras`` fit (tf_keras imported directly, so the callbacks move to tf_keras at ``set_model``,
  NOTE [ Two Kerases ] in dh_tf/tf/keras_callback.py).
- Two ``tf_keras`` workers (``examples/keras_multi_worker.py``: subprocesses with ``TF_CONFIG`` and
  ``TF_USE_LEGACY_KERAS=1``) fit on one table of this session's server read over pydeephaven, with
  no JVM of their own, each with a ``MetricsTable(session=...)`` on that server; every wait is bounded (NOTE [ Bounded multi-process tests ] in
  test_multi_worker.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import REPO, TEST_PSK
from test_multi_worker import published, run_example, without_engine  # noqa: F401  (published: a fixture)

import __main__
import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError

EXAMPLE = REPO / "examples" / "keras_multi_worker.py"
SUCCESS = "dh_tf example OK:"
NUM_ROWS = 4000  # even: the two shards cover the table
EPOCHS = 3
WORKER_TIMEOUT_S = 240  # the example's own deadline for both workers (and every collective)
LAUNCHER_TIMEOUT_S = WORKER_TIMEOUT_S + 60


def load_example() -> ModuleType:
    """examples/keras_multi_worker.py as a module (its top level imports only the stdlib and numpy)."""
    spec = importlib.util.spec_from_file_location("keras_multi_worker_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


@pytest.fixture(scope="module")
def table(make_table):
    """100 rows: ``Id``, ``X`` and ``Y`` (= 2X + 1)."""
    return make_table(100, "X = (double)(i % 17) / 17.0", "Y = 2 * X + 1")


def ids_of(batches) -> list[int]:
    return [int(i) for _, y in batches for i in np.asarray(y["id"])]


def reference_ids(table, epoch: int, **options) -> list[int]:
    """The ids of loader epoch ``epoch`` of a plain TableLoader with these options."""
    loader = dh_tf.TableLoader(table, ["X"], {"y": "Y", "id": "Id"}, **options)
    loader.set_epoch(epoch)
    return ids_of(loader)


# The helper, in this process (one replica).


@pytest.mark.parametrize(
    "drop_remainder, batch_size, steps", [(False, 16, 7), (True, 16, 6), (False, 25, 4), (True, 100, 1), (False, 128, 1)]
)
def test_steps_per_epoch_are_the_loaders_batches(table, drop_remainder, batch_size, steps):
    import tensorflow as tf

    data = dh_tf.distributed_fit_dataset(tf.distribute.get_strategy(), table, ["X"], "Y", batch_size=batch_size,
                                         drop_remainder=drop_remainder)
    assert isinstance(data, dh_tf.FitDataset) and data.steps_per_epoch == steps
    dataset, steps_per_epoch = data  # a named tuple: unpacks too
    assert steps_per_epoch == steps


def test_keras_epoch_e_reads_loader_epoch_e_and_the_dataset_repeats(table):
    import tensorflow as tf

    options = {"batch_size": 16, "shuffle": True, "seed": 5}
    data = dh_tf.distributed_fit_dataset(tf.distribute.get_strategy(), table, ["X"], {"y": "Y", "id": "Id"},
                                         initial_epoch=2, **options)
    batches = iter(data.dataset)  # one iterator for every epoch, as tf_keras keeps it
    for epoch in (2, 3, 4):
        got = ids_of(next(batches) for _ in range(data.steps_per_epoch))
        assert got == reference_ids(table, epoch, **options), epoch
        assert sorted(got) == list(range(100))  # a whole epoch, no row twice


def test_with_mirrored_strategy_each_step_is_one_batch(table):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    data = dh_tf.distributed_fit_dataset(strategy, table, ["X"], {"y": "Y", "id": "Id"}, batch_size=32)
    assert data.steps_per_epoch == 4
    batches = iter(data.dataset)
    got = ids_of(next(batches) for _ in range(2 * data.steps_per_epoch))
    assert got == list(range(100)) * 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"strategy": "mirrored"}, ArgumentTypeError,
         r"distributed_fit_dataset: strategy must be a tf.distribute.Strategy \(got 'mirrored' of type str\)"),
        ({"num_shards": 2}, ArgumentError, r"distributed_fit_dataset: num_shards must not be given \(got num_shards=2\); "
         r"the strategy decides each worker's shard \(use dh_tf.to_dataset for your own sharding\)"),
        ({"shard_index": 0, "input_context": None}, ArgumentError, r"shard_index must not be given \(got shard_index=0\)"),
        ({"follow": True}, ArgumentError, "follow must not be given .got follow=True.; a live table has no steps per epoch"),
        ({"batchsize": 8}, ArgumentTypeError, "distributed_fit_dataset: got an unexpected keyword argument 'batchsize'; "
         "did you mean 'batch_size'"),
        ({"batch_size": 0}, ArgumentError, r"distributed_fit_dataset: batch_size must be an int >= 1 \(got 0\)"),
        ({"batch_size": 8.0}, ArgumentTypeError, "batch_size must be an int >= 1 .got 8.0 of type float"),
        ({"initial_epoch": -1}, ArgumentError, r"initial_epoch must be an int >= 0 \(got -1\)"),
        ({"initial_epoch": True}, ArgumentTypeError, "initial_epoch must be an int >= 0 .got True of type bool"),
        ({"features": ["Nope"]}, ArgumentError, "Nope"),
    ],
)
def test_argument_errors(table, kwargs, error, match):
    import tensorflow as tf

    args = {"strategy": tf.distribute.get_strategy(), "features": ["X"], **kwargs}
    strategy, features = args.pop("strategy"), args.pop("features")
    with pytest.raises(error, match=match):
        dh_tf.distributed_fit_dataset(strategy, table, features, "Y", **args)


def test_refreshing_and_empty_tables_are_refused(server, make_table):
    import tensorflow as tf
    from deephaven import time_table

    strategy = tf.distribute.get_strategy()
    ticking = time_table("PT0.1s").update(["X = (double)ii", "Y = X"])
    with pytest.raises(ArgumentError, match=r"the table is refreshing.*pass a static snapshot \(table.snapshot\(\)\)"):
        dh_tf.distributed_fit_dataset(strategy, ticking, ["X"], "Y")
    with pytest.raises(ArgumentError, match="shard of 0 rows gives 0 batches of 32 rows per replica, fewer than its 1 "
                                            "replicas: nothing to train"):
        dh_tf.distributed_fit_dataset(strategy, make_table(0, "X = 1.0", "Y = 1.0"), ["X"], "Y")


def test_sync_epochs_refuses_the_distributed_dataset(table):
    import tensorflow as tf

    data = dh_tf.distributed_fit_dataset(tf.distribute.get_strategy(), table, ["X"], "Y")
    with pytest.raises(UsageError, match="SyncEpochs: a dataset from dh_tf.distributed_fit_dataset already reads "
                                         "loader epoch e in Keras epoch e; leave SyncEpochs out"):
        dh_tf.SyncEpochs(data.dataset)


# dh_tf's callbacks in a tf_keras fit, in this process.


def tf_keras_model():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((1,)), tf_keras.layers.Dense(1)])
    model.compile(optimizer=tf_keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


def test_sync_epochs_and_metrics_table_in_a_tf_keras_fit(table):
    import tf_keras
    from deephaven.numpy import to_numpy

    ds = dh_tf.to_dataset(table, ["X"], "Y", batch_size=16, shuffle=True, seed=3)
    ds.take(1).reduce(0, lambda a, _: a)  # a pass outside fit: SyncEpochs puts epoch 0 back
    sync, metrics = dh_tf.SyncEpochs(ds), dh_tf.MetricsTable(every="epoch")
    epochs = []
    record = tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(ds.dh_tf_loader.state_dict()))
    history = tf_keras_model().fit(ds, epochs=3, callbacks=[sync, metrics, record], verbose=0)

    assert isinstance(sync, tf_keras.callbacks.Callback) and isinstance(metrics, tf_keras.callbacks.Callback)
    assert [state["epoch"] for state in epochs] == [1, 2, 3]  # Keras epoch e was loader epoch e
    column = {name: to_numpy(metrics.table, [name])[:, 0] for name in ("Epoch", "Step", "Rows", "EpochEnd", "loss", "mae")}
    assert column["Epoch"].tolist() == [0, 1, 2] and column["EpochEnd"].tolist() == [True] * 3
    assert column["Step"].tolist() == [7, 14, 21]  # 100 rows at batch 16: 7 steps per epoch
    assert column["Rows"].tolist() == [100, 200, 300]
    np.testing.assert_allclose(column["loss"], history.history["loss"], rtol=1e-7)
    np.testing.assert_allclose(column["mae"], history.history["mae"], rtol=1e-7)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_one_callback_moves_between_the_two_kerases(table):
    import keras
    import tf_keras

    ds = dh_tf.to_dataset(table, ["X"], "Y", batch_size=50)
    sync = dh_tf.SyncEpochs(ds)
    tf_keras_model().fit(ds, epochs=1, callbacks=[sync], verbose=0)
    assert isinstance(sync, tf_keras.callbacks.Callback) and not isinstance(sync, keras.callbacks.Callback)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(ds, epochs=2, callbacks=[sync], verbose=0, shuffle=False)
    assert isinstance(sync, keras.callbacks.Callback) and not isinstance(sync, tf_keras.callbacks.Callback)
    assert isinstance(sync, dh_tf.SyncEpochs) and sync.loader is ds.dh_tf_loader
    assert ds.dh_tf_loader.state_dict()["epoch"] == 2


def test_a_model_of_neither_keras_is_refused(table):
    sync = dh_tf.SyncEpochs(dh_tf.to_dataset(table, ["X"], "Y"))
    with pytest.raises(UsageError, match="SyncEpochs: a dh_tf callback works with a Keras 3 .keras. or tf_keras model "
                                         r"\(got builtins.object\)"):
        sync.set_model(object())


def test_resumable_training_refuses_a_tf_keras_model_before_training(table, tmp_path: Path):
    run = dh_tf.ResumableTraining(tmp_path / "ckpt", every=2)
    with pytest.raises(UsageError, match="ResumableTraining.fit: resumes Keras 3 models only .* this model is a "
                                         "tf_keras one; checkpoint it with tf_keras.callbacks.BackupAndRestore"):
        run.fit(tf_keras_model(), dh_tf.to_dataset(table, ["X"], "Y"), epochs=1)
    assert not (tmp_path / "ckpt").exists()


# Two tf_keras workers against this session's server.


@pytest.mark.slow
def test_two_tf_keras_workers_fit_one_remote_table(server, published, tmp_path: Path):  # noqa: F811
    from deephaven import empty_table
    from pydeephaven import Session

    published("dh_tf_keras_workers_test", empty_table(NUM_ROWS).update(example.FORMULAS))
    env = {"DH_HOST": "localhost", "DH_PORT": str(server.test_port), "DH_PSK": TEST_PSK,
           "DH_TABLE": "dh_tf_keras_workers_test", "DH_TF_EXAMPLE_DIR": str(tmp_path),
           "DH_TF_EXAMPLE_EPOCHS": str(EPOCHS), "DH_TF_EXAMPLE_TIMEOUT": str(WORKER_TIMEOUT_S)}
    returncode, output = run_example(EXAMPLE, {**env, **without_engine(tmp_path)}, tmp_path, LAUNCHER_TIMEOUT_S)
    assert returncode == 0, f"keras_multi_worker failed (exit {returncode}):\n{output[-8000:]}"
    assert any(line.startswith(SUCCESS) for line in output.splitlines()), output[-4000:]
    reports = [dict(np.load(tmp_path / f"worker-{index}.npz")) for index in range(example.NUM_WORKERS)]

    per_replica_batch = example.GLOBAL_BATCH // example.NUM_WORKERS
    shard_rows = NUM_ROWS // example.NUM_WORKERS
    steps = -(-shard_rows // per_replica_batch)  # 2000 rows at 32: 62 full batches and one of 16
    session = Session(port=server.test_port, auth_type="io.deephaven.authentication.psk.PskAuthenticationHandler",
                      auth_token=TEST_PSK)
    try:
        remote = session.open_table("dh_tf_keras_workers_test")
        for worker, report in enumerate(reports):
            assert not bool(report["jvm"])
            assert int(report["steps_per_epoch"]) == steps and report["steps"].tolist() == [steps] * EPOCHS
            loss = report["loss"].tolist()
            assert loss[0] > loss[1] > loss[2], loss
            for epoch in range(EPOCHS):  # exactly loader epoch e of this worker's shard, in order
                expected = dh_tf.TableLoader(remote, example.FEATURES, {"label": "Label", "id": "Id"},
                                             batch_size=per_replica_batch, shuffle=True, seed=example.SEED,
                                             num_shards=2, shard_index=worker)
                expected.set_epoch(epoch)
                np.testing.assert_array_equal(report[f"ids_{epoch}"], [i for _, y in expected for i in y["id"]])
    finally:
        session.close()
    for epoch in range(EPOCHS):
        ids = [r[f"ids_{epoch}"] for r in reports]
        assert not np.intersect1d(ids[0], ids[1]).size, f"epoch {epoch}: a row reached both workers"
        np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(NUM_ROWS))  # the shards cover the table
    assert not np.array_equal(reports[0]["ids_0"], reports[0]["ids_1"])  # reshuffled each epoch
    weights = [r["weights"] for r in reports]
    assert weights[0].dtype == np.float32 and weights[0].size == 8 * 32 + 32 + 32 + 1
    np.testing.assert_array_equal(weights[0], weights[1])  # bit for bit: synchronous training
    np.testing.assert_array_equal(reports[0]["loss"], reports[1]["loss"])
    assert reports[0]["accuracy"][-1] > 0.85

    # Each worker's MetricsTable (session=: no JVM in the worker), bound in this server's scope.
    from deephaven.numpy import to_numpy

    for worker in range(example.NUM_WORKERS):
        name = f"dh_tf_keras_workers_test_metrics_{worker}"
        published(name, getattr(__main__, name))  # removed after the test
        metrics = getattr(__main__, name)
        column = {c: to_numpy(metrics, [c])[:, 0] for c in ("Epoch", "Step", "Rows", "EpochEnd", "loss", "accuracy")}
        assert column["Epoch"].tolist() == list(range(EPOCHS)) and column["EpochEnd"].all()
        assert column["Step"].tolist() == [steps * (e + 1) for e in range(EPOCHS)]
        assert column["Rows"].tolist() == [NUM_ROWS * (e + 1) for e in range(EPOCHS)]  # both workers' rows
        np.testing.assert_allclose(column["loss"], reports[worker]["loss"], rtol=1e-6)
        np.testing.assert_allclose(column["accuracy"], reports[worker]["accuracy"], rtol=1e-6)
