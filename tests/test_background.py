"""fit_in_background without a browser: a Future at once, fit on the ``dh_tf-fit`` thread, errors through the Future,
and training (with a ticking MetricsTable) while the caller holds the update graph's lock, as an IDE console
command does (NOTE [ Console lock ] in write/metrics_table.py).

Every wait has a deadline: a fit that ran on the calling thread, or needed the caller's lock, fails the test
instead of hanging it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

import dh_tf
from dh_tf.tf.background import FIT_THREAD_NAME

ROWS, BATCH = 2000, 64
STEPS = -(-ROWS // BATCH)  # 32 steps an epoch, the last one of 16 rows
EVERY = 5
WAIT_S = 120  # the longest any wait may take: generous, on a shared 2-core machine


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(ROWS, "X = Math.sin(i * 0.1)", "Y = 2 * X + 0.5")


def dataset(table):
    # reader_threads=2: pages are read on dh_tf-reader threads, under TensorFlow's own threads
    return dh_tf.to_dataset(table, ["X"], "Y", batch_size=BATCH, reader_threads=2, prefetch=2)


def new_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


@pytest.fixture(scope="module")
def graph(server):
    """The update graph's Java object, taken on the test thread (the fit thread has no ExecutionContext)."""
    from deephaven.execution_context import get_exec_ctx

    return get_exec_ctx().update_graph.j_update_graph


def expected_steps(epochs: int) -> list[int]:
    """The Step of every MetricsTable row with every=EVERY: multiples of EVERY plus each epoch's last step."""
    return sorted(set(range(EVERY, epochs * STEPS + 1, EVERY)) | {STEPS * (e + 1) for e in range(epochs)})


def steps_of(table) -> list[int]:
    from deephaven.numpy import to_numpy

    return to_numpy(table, ["Step"])[:, 0].tolist()


def wait_until(condition, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def probe_callback(graph, returned: threading.Event, seen: dict):
    """A Keras callback that records the thread fit runs on, and holds fit until the caller got its Future."""
    import keras

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            thread = threading.current_thread()
            seen["thread"] = (thread.name, thread.daemon)
            seen["holds_graph_lock"] = bool(graph.exclusiveLock().isHeldByCurrentThread())
            # fit run by the caller itself would wait here for a Future it has not got yet: False after WAIT_S
            seen["caller_had_future"] = returned.wait(WAIT_S)

    return Probe()


def test_returns_a_future_before_fit_ends_and_fit_runs_on_the_dh_tf_fit_thread(table, graph):
    import keras

    model, returned, seen = new_model(), threading.Event(), {}
    future = dh_tf.fit_in_background(model, dataset(table), epochs=3, callbacks=[probe_callback(graph, returned, seen)],
                                     verbose=0, shuffle=False)
    done_on_return = future.done()  # the probe holds fit in on_train_begin until `returned` is set
    returned.set()
    history = future.result(timeout=WAIT_S)
    assert isinstance(future, concurrent.futures.Future)
    assert not done_on_return
    assert seen == {"thread": (FIT_THREAD_NAME, True), "holds_graph_lock": False, "caller_had_future": True}
    assert isinstance(history, keras.callbacks.History) and history.model is model
    assert history.epoch == [0, 1, 2]
    assert history.params["epochs"] == 3 and history.params["steps"] == STEPS
    assert len(history.history["loss"]) == 3 and np.all(np.isfinite(history.history["loss"]))


class EpochEndError(RuntimeError):
    """Raised by a test callback; a type of the test's own, so nothing else can raise it."""


def test_an_exception_raised_in_fit_comes_back_from_the_future_with_its_type(table):
    import keras

    raised, begun = [], []

    class Raiser(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            begun.append(epoch)

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raised.append(EpochEndError(f"epoch {epoch} ended badly"))
                raise raised[-1]

    future = dh_tf.fit_in_background(new_model(), dataset(table), epochs=4, callbacks=[Raiser()], verbose=0,
                                     shuffle=False)
    with pytest.raises(EpochEndError, match="^epoch 1 ended badly$") as e:
        future.result(timeout=WAIT_S)
    assert e.value is raised[0]
    assert future.exception(timeout=0) is raised[0]
    assert begun == [0, 1]  # fit stopped at the exception


def test_trains_to_completion_while_the_caller_holds_the_update_graph_lock(table, graph):
    """As a console command: under the exclusive lock, build the dataset and MetricsTable and start training.

    fit must finish without the lock (its dataset reads and Keras run on other threads); no update cycle runs
    while the lock is held, so the MetricsTable is empty then, and holds every row once the lock is released
    and flush() was called. fit run on the calling thread would stop the probe (caller_had_future False).
    """
    from deephaven.update_graph import exclusive_lock

    model, returned, seen = new_model(), threading.Event(), {}
    # Nothing inside the `with` may raise (exclusive_lock turns exceptions into DHError): record, assert after.
    with exclusive_lock(table):
        held = bool(graph.exclusiveLock().isHeldByCurrentThread())
        metrics = dh_tf.MetricsTable(every=EVERY, metrics=["loss"])
        future = dh_tf.fit_in_background(model, dataset(table), epochs=2,
                                         callbacks=[metrics, probe_callback(graph, returned, seen)], verbose=0,
                                         shuffle=False)
        returned.set()
        # fit's own on_train_end flush cannot see the table tick here: it gives up after FLUSH_TIMEOUT_S (10 s)
        done, _ = concurrent.futures.wait([future], timeout=WAIT_S)
        rows_while_locked = metrics.table.size
    assert held
    assert future in done, "fit did not finish while the caller held the update graph's lock"
    history = future.result(timeout=0)
    assert history.epoch == [0, 1]
    assert seen == {"thread": (FIT_THREAD_NAME, True), "holds_graph_lock": False, "caller_had_future": True}
    assert rows_while_locked == 0  # the premise: the lock really held the update graph still
    assert metrics.flush(timeout_s=WAIT_S)
    assert steps_of(metrics.table) == expected_steps(2)


def test_metrics_table_ticks_while_fit_runs_after_the_console_command_released_the_lock(table, graph):
    """The IDE case: the command starts fit_in_background under the lock and ends; the table ticks during fit.

    A callback after MetricsTable holds fit at the start of epoch 1 until the table shows all of epoch 0's
    rows: only possible when update cycles run while fit is still running.
    """
    import keras
    from deephaven.update_graph import exclusive_lock

    seen = {}

    class Watcher(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                rows = len(expected_steps(1))
                seen["epoch_0_rows_during_fit"] = rows if wait_until(lambda: metrics.table.size >= rows) else None
                seen["holds_graph_lock"] = bool(graph.exclusiveLock().isHeldByCurrentThread())

    with exclusive_lock(table):  # the console command
        metrics = dh_tf.MetricsTable(every=EVERY, metrics=["loss"])
        future = dh_tf.fit_in_background(new_model(), dataset(table), epochs=3, callbacks=[metrics, Watcher()],
                                         verbose=0, shuffle=False)
    history = future.result(timeout=2 * WAIT_S)
    assert seen == {"epoch_0_rows_during_fit": len(expected_steps(1)), "holds_graph_lock": False}
    assert history.epoch == [0, 1, 2]
    assert steps_of(metrics.table) == expected_steps(3)  # on_train_end's flush completed the table


def test_stop_ends_fit_at_the_next_batch_end_and_the_model_and_metrics_table_stay_usable(table):
    """run.stop() during epoch 1's 10th batch: fit returns its History after that batch, the MetricsTable holds the
    rows up to there (the last one an epoch end), and both the model and the table serve a second fit."""
    import keras

    from dh_tf.tf.background import FitProgress, TrainingRun

    holder, stop_at = {}, STEPS + 10

    class StopAt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            holder["returned"].wait(WAIT_S)

        def on_train_batch_end(self, batch, logs=None):
            if len(holder.setdefault("steps", [])) + 1 == stop_at:
                holder["stop_returned"] = holder["run"].stop()
            holder["steps"].append(batch)

    holder["returned"] = threading.Event()
    model, metrics = new_model(), dh_tf.MetricsTable(every=EVERY, metrics=["loss"])
    callbacks = [metrics, StopAt()]
    run = dh_tf.fit_in_background(model, dataset(table), epochs=3, callbacks=callbacks, verbose=0, shuffle=False)
    holder["run"] = run
    holder["returned"].set()
    history = run.result(timeout=WAIT_S)
    assert isinstance(run, TrainingRun) and isinstance(run, concurrent.futures.Future)
    assert callbacks == [metrics, callbacks[1]]  # the caller's list is not changed
    assert holder["stop_returned"] is True and run.stop() is False  # False: fit had already ended
    assert holder["steps"] == [*range(STEPS), *range(10)]  # no batch after the stop
    assert history.epoch == [0, 1]
    progress = run.progress()
    assert progress == FitProgress(epoch=1, epochs=3, step=10, steps_per_epoch=STEPS, steps_done=stop_at,
                                   steps_total=3 * STEPS, seconds_per_step=progress.seconds_per_step,
                                   stop_requested=True)
    assert progress.seconds_per_step > 0 and progress.eta_s == (3 * STEPS - stop_at) * progress.seconds_per_step
    assert steps_of(metrics.table) == sorted(set(range(EVERY, stop_at + 1, EVERY)) | {STEPS, stop_at})

    again = dh_tf.fit_in_background(model, dataset(table), epochs=1, callbacks=[metrics], verbose=0, shuffle=False)
    assert again.result(timeout=WAIT_S).epoch == [0]  # all of it: Keras reset stop_training
    assert again.progress().steps_done == STEPS
    assert steps_of(metrics.table)[-3:] == [65, 70, stop_at + STEPS]  # Step continues from 42: multiples of 5, 74
    assert np.isfinite(model.evaluate(dataset(table), verbose=0))


def test_callbacks_passed_positionally_get_the_stop_callback_and_other_types_are_refused(table):
    from dh_tf.tf.background import FitProgress

    # x, y, batch_size, epochs, verbose, callbacks
    run = dh_tf.fit_in_background(new_model(), dataset(table), None, None, 1, 0, [], shuffle=False)
    run.result(timeout=WAIT_S)
    progress = run.progress()
    assert progress == FitProgress(epoch=0, epochs=1, step=STEPS, steps_per_epoch=STEPS, steps_done=STEPS,
                                   steps_total=STEPS, seconds_per_step=progress.seconds_per_step)
    assert progress.eta_s == 0
    with pytest.raises(TypeError, match=r"^fit_in_background: callbacks must be None, a list or a tuple of Keras "
                                        r"callbacks \(got dict\)$"):
        dh_tf.fit_in_background(new_model(), dataset(table), callbacks={"metrics": None})
