"""dh_tf.to_py_dataset on the TensorFlow backend (this process) and its rules (NOTE [ PyDataset epochs ]).

The JAX backend, without TensorFlow, is tests/test_keras_jax.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import dh_tf
from dh_tf.reading.options import LOADER_OPTIONS, keyword_defaults

SEED = 3


def counting_reads(ds):
    """Counts the passes ``ds`` reads from its loader (each one reads the epoch's pages)."""
    loader, reads = ds.loader, []
    iter_groups = loader.iter_groups

    def counted(*args, **kwargs):
        reads.append(loader.begin_epoch(peek=True)[0])
        return iter_groups(*args, **kwargs)

    loader.iter_groups = counted
    return reads


def reference_ids(table, epochs, **options):
    loader = dh_tf.TableLoader(table, "Id", **options)
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out.append([int(i) for batch in loader for i in batch])
    return out


def test_reading_options_are_table_loaders():
    options = keyword_defaults(dh_tf.to_py_dataset)
    assert options == {**LOADER_OPTIONS, "workers": 1, "use_multiprocessing": False}


def test_fit_evaluate_predict_on_tensorflow_read_each_epoch_once(make_table):
    table = make_table(100, "X = (double)(i % 10) / 10.0", "Y = 2 * X")
    ds = dh_tf.to_py_dataset(table, {"x": ["X"]}, "Y", batch_size=16, shuffle=True, seed=SEED, page_rows=32)
    reads = counting_reads(ds)
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(1,), name="x")
    model = keras.Model({"x": inputs}, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse")
    history = model.fit(ds, epochs=3, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Keras' tensor-spec peek (batches 0 and 1) is replayed, not read again: one read per epoch
    assert reads[:3] == [0, 1, 2] and len(reads) <= 4
    assert ds.loader.state_dict()["epoch"] == 3
    ids = dh_tf.to_py_dataset(table, ["Id", "X"], batch_size=16)
    passthrough = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Lambda(lambda t: t[:, :1])])
    assert passthrough.predict(ids, verbose=0)[:, 0].tolist() == list(range(100))


def test_batches_follow_the_loaders_epochs_and_a_restart_replays(make_table):
    table = make_table(50, "X = (double)i")
    ds = dh_tf.to_py_dataset(table, "Id", batch_size=8, shuffle=True, seed=SEED, page_rows=16)
    reads = counting_reads(ds)
    expected = reference_ids(table, 2, batch_size=8, shuffle=True, seed=SEED, page_rows=16)
    assert len(ds) == 7
    peeked = [ds[0].tolist(), ds[1].tolist()]  # as Keras' peeks do
    epoch0 = [int(i) for index in range(len(ds)) for i in ds[index]]
    assert peeked == [epoch0[:8], epoch0[8:16]] and epoch0 == expected[0]
    ds.on_epoch_end()
    assert [int(i) for index in range(len(ds)) for i in ds[index]] == expected[1]
    assert reads == [0, 1]


def test_out_of_order_batches_and_mid_epoch_resume_points_are_refused(make_table):
    table = make_table(50, "X = (double)i")
    ds = dh_tf.to_py_dataset(table, "X", batch_size=8)
    with pytest.raises(dh_tf.UsageError, match=r"^to_py_dataset: Keras asked for batch 3 where batch 0 comes next; "
                       r"this PyDataset serves each epoch's batches in order, reading each page once\. Keras' fit "
                       r"shuffles a PyDataset's batch indices unless told not to: call model\.fit\(\.\.\., "
                       r"shuffle=False\)"):
        ds[3]
    ds[0]
    with pytest.raises(dh_tf.UsageError, match="Keras asked for batch 5 where batch 1 comes next"):
        ds[5]
    with pytest.raises(dh_tf.ArgumentError, match=r"^to_py_dataset: batch index 7 is out of range: an epoch has 7 "
                       r"batches$"):
        ds[7]
    ds.loader.load_state_dict(ds.loader.state_dict(epoch=2, batches=3))
    with pytest.raises(dh_tf.UsageError, match=r"^to_py_dataset: the loader holds a resume point at batch 3 of epoch "
                       r"2, but a PyDataset resumes at epoch boundaries only"):
        ds[0]
    ds.loader.load_state_dict(ds.loader.state_dict(epoch=2, batches=0))
    assert np.array_equal(ds[0], np.arange(8, dtype=np.float32))


def test_keras_worker_pools_and_refreshing_tables_are_refused(make_table):
    from deephaven import time_table

    ds = dh_tf.to_py_dataset(make_table(10, "X = 1.0"), "X")
    with pytest.raises(dh_tf.ArgumentError, match=r"^to_py_dataset: workers must be 1 \(got workers=3\)"):
        ds.workers = 3
    assert ds.workers == 1 and ds.use_multiprocessing is False
    with pytest.raises(dh_tf.ArgumentError, match=r"^to_py_dataset: table must be static, but this table is "
                       r"refreshing .*; pass table.snapshot\(\), or use dh_tf.to_dataset$"):
        dh_tf.to_py_dataset(time_table("PT1s").update("X = 1.0"), "X")
    with pytest.raises(dh_tf.ArgumentTypeError, match="to_py_dataset: got an unexpected keyword argument 'shufle'"):
        dh_tf.to_py_dataset(None, "X", shufle=True)


def test_a_strategy_builds_peek_does_not_count_as_an_epoch(make_table):
    """Under a tf.distribute strategy Keras builds from a fresh iterator whose read-ahead reaches the end of a
    small epoch; that pass is a peek (NOTE [ PyDataset epochs ]), so fit(epochs=2) moves the loader by 2."""
    import tensorflow as tf

    table = make_table(24, "X = (double)(i % 5)", "Y = X")  # 3 batches: the peek reads them all
    ds = dh_tf.to_py_dataset(table, ["X"], "Y", batch_size=8, shuffle=True, seed=SEED, page_rows=16)
    reads = counting_reads(ds)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    model.fit(ds, epochs=2, shuffle=False, verbose=0)
    assert ds.loader.state_dict()["epoch"] == 2
    assert reads[:3] == [0, 0, 1], reads  # the peek read epoch 0 whole; the first Keras epoch read it again
