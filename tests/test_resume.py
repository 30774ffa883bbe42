"""Exact mid-epoch resumption (NOTE [ Resuming an epoch ] in reading/state.py, NOTE [ Resumable training ] in tf/resumable.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import REPO, free_port

import dh_tf

KW = dict(batch_size=100, page_rows=1000, shuffle=True, seed=4, prefetch=2, reader_threads=2)


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(10_007, "X = (double)Id")


def ids(batches):
    return [x for x, _ in batches]


@pytest.mark.parametrize("stop_after", [1, 37, 100])
@pytest.mark.parametrize("shuffle", [True, False])
def test_state_round_trips_through_json_and_resumes_the_uninterrupted_order(table, stop_after, shuffle):
    kw = {**KW, "shuffle": shuffle}
    reference = dh_tf.TableLoader(table, "Id", "X", **kw)
    epochs = [ids(reference) for _ in range(2)]
    loader = dh_tf.TableLoader(table, "Id", "X", **kw)
    iterator = iter(loader)
    before = [next(iterator)[0] for _ in range(stop_after)]
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator  # pages read ahead by 2 reader threads + prefetch 2 are not counted as delivered
    assert state["epoch"] == 0 and state["batches"] == stop_after
    restored = dh_tf.TableLoader(table, "Id", "X", **kw)
    restored.load_state_dict(state)
    after = ids(restored)
    assert len(before) + len(after) == len(epochs[0]) == 101
    assert all(np.array_equal(a, b) for a, b in zip(before + after, epochs[0]))
    assert restored.state_dict()["epoch"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(ids(restored), epochs[1]))


def test_state_of_a_fresh_and_a_finished_epoch(table):
    loader = dh_tf.TableLoader(table, "Id", **KW)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batches"]) == (0, 0)
    list(loader)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batches"]) == (1, 0)
    loader.set_epoch(5)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batches"]) == (5, 0)


@pytest.mark.parametrize("change,message", [
    ({"seed": 5}, r"seed=4 \(this loader: 5\)"),
    ({"batch_size": 50}, r"batch_size=100 \(this loader: 50\)"),
    ({"shuffle": False}, r"shuffle=True \(this loader: False\)"),
])
def test_a_state_for_another_loader_is_refused_naming_the_mismatch(table, change, message):
    state = dh_tf.TableLoader(table, "Id", **KW).state_dict()
    with pytest.raises(ValueError, match=rf"load_state_dict: the state was made for another loader: {message}"):
        dh_tf.TableLoader(table, "Id", **{**KW, **change}).load_state_dict(state)


def test_a_state_for_another_table_size_or_format_is_refused(table):
    state = dh_tf.TableLoader(table, "Id", **KW).state_dict()
    with pytest.raises(ValueError, match=r"num_rows=10007 \(this table: 10006\)"):
        dh_tf.TableLoader(table.head(10_006), "Id", **KW).load_state_dict(state)
    with pytest.raises(dh_tf.ArgumentError, match=r"state format 3 is not one this dh_tf reads \(formats 1..2\)"):
        dh_tf.TableLoader(table, "Id", **KW).load_state_dict({**state, "format": 3})
    with pytest.raises(ValueError, match=r"state\['batches'\] must be <= 101 batches per epoch \(got 102\)"):
        dh_tf.TableLoader(table, "Id", **KW).load_state_dict({**state, "batches": 102})
    with pytest.raises(TypeError, match="state must be a dict from state_dict"):
        dh_tf.TableLoader(table, "Id", **KW).load_state_dict("state")


@pytest.mark.slow
def test_a_killed_keras_run_resumes_mid_epoch_exactly(make_table, tmp_path, run_script):
    from deephaven import parquet

    path = str(tmp_path / "t.parquet")
    parquet.write(make_table(1_000, "X = (double)(Id % 17)", "Y = X * 2"), path)
    checkpoint, log = tmp_path / "ckpt", tmp_path / "ids.log"
    killed = run_script(path, checkpoint, log, "1:7")
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = json.loads((checkpoint / "dh_tf_state.json").read_text())["loader"]
    assert (state["epoch"], state["batches"]) == (1, 5)  # saved every 5 steps: steps 5, 6, 7 are retrained
    resumed = run_script(path, checkpoint, log, "-")
    assert resumed.returncode == 0 and "finished" in resumed.stdout, resumed.stderr[-3000:]

    lines = log.read_text().splitlines()
    runs = [i for i, line in enumerate(lines) if line.startswith("start")]
    first = [np.array(line.split(), dtype=np.int64) for line in lines[runs[0] + 1 : runs[1]]]
    second = [np.array(line.split(), dtype=np.int64) for line in lines[runs[1] + 1 :]]
    steps = 16  # 1000 rows at batch 64
    assert len(first) == steps + 8  # epoch 0, then epoch 1 up to the kill after step 7
    # Epoch 1 = the 5 checkpointed steps before the kill + what the second run trained first.
    epoch1 = first[steps : steps + 5] + second[: steps - 5]
    assert np.array_equal(np.sort(np.concatenate(epoch1)), np.arange(1000))
    expected = dh_tf.TableLoader(parquet.read(path), "Id", batch_size=64, shuffle=True, seed=11, page_rows=640)
    uninterrupted = [list(expected) for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first[:steps], uninterrupted[0]))
    assert all(np.array_equal(a, b) for a, b in zip(epoch1, uninterrupted[1]))
    assert len(second) == (steps - 5) + steps
    assert all(np.array_equal(a, b) for a, b in zip(second[steps - 5 :], uninterrupted[2]))
    # Weights and the optimizer's state (Adam's moments, its step count) came back: the resumed run
    # ends exactly where a run that was never killed ends.
    whole = run_script(path, tmp_path / "ckpt-whole", tmp_path / "whole.log", "-")
    assert whole.returncode == 0, whole.stderr[-3000:]
    resumed_end, whole_end = np.load(f"{log}.end.npz"), np.load(tmp_path / "whole.log.end.npz")
    assert len(resumed_end.files) == len(whole_end.files) > 2
    for name in whole_end.files:
        np.testing.assert_allclose(resumed_end[name], whole_end[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.fixture
def run_script():
    import subprocess
    import sys

    def run(path, checkpoint, log, kill_at):
        return subprocess.run(
            [sys.executable, str(REPO / "tests" / "resume_script.py"), str(free_port()), path, str(checkpoint),
             str(log), kill_at],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )

    return run


@pytest.mark.parametrize("value,error,message", [
    (0, ValueError, r"every must be an int >= 1 \(got 0\)"),
    (True, TypeError, r"every must be an int >= 1 \(got True of type bool\)"),
    ("5", TypeError, r"every must be an int >= 1 \(got '5' of type str\)"),
])
def test_bad_save_every(tmp_path, value, error, message):
    with pytest.raises(error, match=message):
        dh_tf.ResumableTraining(tmp_path, every=value)


def test_fit_needs_a_dh_tf_dataset_and_the_callback_needs_fit(tmp_path, table):
    import keras
    import tensorflow as tf

    run = dh_tf.ResumableTraining(tmp_path)
    assert isinstance(run, keras.callbacks.Callback)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(TypeError, match="expected a dh_tf.TableLoader or a dataset from dh_tf.to_dataset"):
        run.fit(model, tf.data.Dataset.range(3), epochs=1)
    mapped = dh_tf.to_dataset(table, ["X"], "X", batch_size=1000).map(lambda x, y: (x * 2, y))
    with pytest.raises(TypeError, match=r"derived from a dh_tf dataset \(by map, batch, ...\).*pass the TableLoader"):
        run.fit(model, mapped, epochs=1)
    with pytest.raises(TypeError, match=r"derived from a dh_tf dataset \(by map, batch, ...\)"):
        dh_tf.SyncEpochs(mapped.batch(2))
    with pytest.raises(RuntimeError, match=r"train with run.fit\(model, dataset, ...\), not model.fit"):
        model.fit(dh_tf.to_dataset(table, ["X"], "X", batch_size=1000), epochs=1, callbacks=[run], verbose=0)


def test_sync_epochs_maps_keras_epochs_to_loader_epochs(table):
    import keras

    ds = dh_tf.to_dataset(table, ["X"], "Id", batch_size=1000, shuffle=True, seed=3)
    next(iter(ds))  # a pass outside fit uses up loader epoch 0
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(ds.dh_tf_loader._next_epoch - 1)

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(ds, epochs=2, callbacks=[dh_tf.SyncEpochs(ds), Record()], verbose=0)
    assert seen == [0, 1]
    with pytest.raises(TypeError, match="SyncEpochs: expected a dh_tf.TableLoader or a dataset from dh_tf.to_dataset"):
        dh_tf.SyncEpochs([1, 2])
    assert dh_tf.SyncEpochs(ds.dh_tf_loader).loader is ds.dh_tf_loader  # the loader itself, e.g. behind ds.map(f)


# --- bugs found by the third wave's review; each test failed before its fix ---


def test_unshuffled_state_with_a_drawn_seed_resumes(table):
    """Bug 1: seed=None draws a seed, which an unshuffled order ignores; loading must not compare it."""
    kw = {**KW, "shuffle": False, "seed": None}
    loader = dh_tf.TableLoader(table, "Id", **kw)
    iterator = iter(loader)
    before = [next(iterator) for _ in range(3)]
    state = loader.state_dict()
    restored = dh_tf.TableLoader(table, "Id", **kw)
    assert restored.seed != loader.seed
    restored.load_state_dict(state)
    assert np.array_equal(np.concatenate(before + list(restored)), np.arange(10_007))
    with pytest.raises(dh_tf.ArgumentError, match=r"seed=4 \(this loader: 5\)"):  # shuffled: the seed matters
        dh_tf.TableLoader(table, "Id", **{**KW, "seed": 5}).load_state_dict(dh_tf.TableLoader(table, "Id", **KW).state_dict())


def test_a_resumed_unshuffled_keras_run_with_a_drawn_seed_restarts(table, tmp_path):
    """Bug 1, as a user hits it: ResumableTraining over to_dataset(t, ["A"], "Y") without a seed, restarted."""
    import keras

    def attempt(stop_at):
        ds = dh_tf.to_dataset(table, ["X"], "X", batch_size=1000, label_dtype="float32")
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        stop = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: setattr(model, "stop_training", batch == stop_at))
        return dh_tf.ResumableTraining(tmp_path, every=1).fit(model, ds, epochs=2, callbacks=[stop], verbose=0)

    attempt(4)
    assert json.loads((tmp_path / "dh_tf_state.json").read_text())["loader"]["batches"] == 5
    history = attempt(-1)  # the seed drawn this time differs; the run goes on
    assert len(history.history["loss"]) == 1 and history.epoch == [1]


def test_a_state_saved_with_the_old_page_size_resumes_unshuffled_and_says_how_when_shuffled(table):
    unshuffled = dh_tf.TableLoader(table, "Id", **{**KW, "shuffle": False}).state_dict()
    dh_tf.TableLoader(table, "Id", **{**KW, "shuffle": False, "page_rows": 2000}).load_state_dict(unshuffled)
    shuffled = dh_tf.TableLoader(table, "Id", **KW).state_dict()
    with pytest.raises(dh_tf.ArgumentError, match=r"page_rows=1000 \(this loader: 2000\).*pass page_rows=1000"):
        dh_tf.TableLoader(table, "Id", **{**KW, "page_rows": 2000}).load_state_dict(shuffled)
    old_sharded = {**dh_tf.TableLoader(table, "Id", **KW, num_shards=2).state_dict(), "format": 1}
    with pytest.raises(dh_tf.ArgumentError, match=r"format 1, dh_tf < 0.2\) is of a shuffled, sharded run"):
        dh_tf.TableLoader(table, "Id", **KW, num_shards=2).load_state_dict(old_sharded)


def test_state_dict_is_right_after_fit_without_callbacks(table):
    """Bug 7: a dataset's passes now move the loader's position (whole epochs; mid-epoch is Keras's count)."""
    import keras

    ds = dh_tf.to_dataset(table, ["X"], "X", batch_size=2000, label_dtype="float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(ds, epochs=3, verbose=0)
    assert (ds.dh_tf_loader.state_dict()["epoch"], ds.dh_tf_loader.state_dict()["batches"]) == (3, 0)


def test_a_dataset_of_a_resumed_loader_is_the_rest_of_its_epoch_once(table):
    """The rest of the resumed epoch with its count, then a clear refusal (Keras 3 would keep that count for
    every later epoch and cut the whole ones short); a dataset built afterwards reads whole epochs."""
    import tensorflow as tf

    reference = dh_tf.TableLoader(table, "Id", **KW)
    epochs = [np.concatenate(list(reference)) for _ in range(3)]
    loader = dh_tf.TableLoader(table, "Id", **KW)
    loader.load_state_dict({**loader.state_dict(), "batches": 40})
    ds = dh_tf.dataset_from_loader(loader)
    assert ds.cardinality() == 101 - 40
    assert np.array_equal(np.concatenate([b.numpy() for b in ds]), epochs[0][40 * 100 :])
    with pytest.raises(tf.errors.OpError, match=r"resume point \(0, 40\) \(epoch, batches\) was pending"):
        list(ds)
    later = dh_tf.dataset_from_loader(loader)
    assert later.cardinality() == 101
    passes = [np.concatenate([b.numpy() for b in later]) for _ in range(2)]
    assert np.array_equal(passes[0], epochs[1]) and np.array_equal(passes[1], epochs[2])


def test_resumable_training_counts_steps_not_hook_calls(table, tmp_path):
    """Bug 9: with steps_per_execution=k Keras calls batch hooks every k steps; the state counts steps."""
    import keras

    ds = dh_tf.to_dataset(table, ["X"], "X", batch_size=100, label_dtype="float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=4)
    seen = []

    def stop(batch, logs):
        seen.append(batch)
        model.stop_training = batch == 11

    run = dh_tf.ResumableTraining(tmp_path, every=4)
    run.fit(model, ds, epochs=1, callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=stop)], verbose=0)
    assert seen == [3, 7, 11]  # three hook calls for twelve steps
    assert run.saved_state["epoch"] == 0 and run.saved_state["batches"] == 12


def test_resumable_training_keeps_the_users_preprocessing_on_resume(table, tmp_path):
    """A loader and make_dataset: the rest of the resumed epoch and the later epochs both go through the user's map."""
    import keras
    import tensorflow as tf

    rows_seen: list[int] = []

    def make_dataset(loader):
        def note(y):
            rows_seen.append(int(tf.size(y)))
            return y

        return dh_tf.dataset_from_loader(loader).map(
            lambda x, y: (x, tf.reshape(tf.py_function(note, [y], tf.float32), tf.shape(y))))

    def stop_at_step_4(batch, logs):
        run.model.stop_training = batch == 4

    def model():
        built = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        built.compile(optimizer="sgd", loss="mse")
        return built

    def loader():
        return dh_tf.TableLoader(table, ["X"], "X", batch_size=100, label_dtype="float32")

    run = dh_tf.ResumableTraining(tmp_path, every=100)
    run.fit(model(), loader(), epochs=2, make_dataset=make_dataset, verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=stop_at_step_4)])
    assert (run.saved_state["epoch"], run.saved_state["batches"]) == (0, 5)
    rows_seen.clear()
    dh_tf.ResumableTraining(tmp_path).fit(model(), loader(), epochs=2, make_dataset=make_dataset, verbose=0)
    assert sum(rows_seen) == (table.size - 500) + table.size  # the rest of epoch 0, then epoch 1, all mapped
