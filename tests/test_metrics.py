"""MetricsTable: a live table of Keras metrics, filled during a real fit on dh_tf.to_dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import run_python

import dh_tf
from dh_tf.write.metrics_plot import plot_metrics
from dh_tf.write.metrics_table import MetricsTable

ROWS, BATCH = 1000, 64  # 16 steps per epoch, the last one of 40 rows
STEPS = 16
WAIT_S = 10


@pytest.fixture(scope="module")
def data(make_table):
    table = make_table(ROWS + 200, "X = Math.sin(i * 0.1)", "Y = 2 * X + 0.5")
    train = dh_tf.to_dataset(table.where(f"Id < {ROWS}"), ["X"], "Y", batch_size=BATCH)
    valid = dh_tf.to_dataset(table.where(f"Id >= {ROWS}"), ["X"], "Y", batch_size=128)
    return train, valid


def new_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


def column(table, name: str) -> np.ndarray:
    from deephaven.numpy import to_numpy

    return to_numpy(table, [name])[:, 0]


def epoch_end_steps(table) -> list[int]:
    return column(table.where("EpochEnd"), "Step").tolist()


def expected_rows(steps, first_epoch: int = 0) -> list[int]:
    """Rows seen after each global step: 1000 per finished epoch plus 64 per step of this one."""
    return [((s - 1) // STEPS) * ROWS + min(((s - 1) % STEPS + 1) * BATCH, ROWS) for s in steps]


def test_every_batch_one_row_per_step_with_exact_values_and_dtypes(data):
    from deephaven import dtypes
    from deephaven.constants import NULL_DOUBLE

    train, valid = data
    metrics = MetricsTable()
    history = new_model().fit(train, epochs=2, validation_data=valid, callbacks=[metrics], verbose=0, shuffle=False)
    table = metrics.table

    types = {c.name: c.data_type for c in table.columns}
    assert types == {"Time": dtypes.Instant, "Epoch": dtypes.int32, "Step": dtypes.int64, "Rows": dtypes.int64,
                     "RowsPerSec": dtypes.double, "EpochEnd": dtypes.bool_, "loss": dtypes.double,
                     "mae": dtypes.double, "val_loss": dtypes.double, "val_mae": dtypes.double}
    assert table.attributes().get("AppendOnly") is True
    assert table.size == 2 * STEPS  # complete when fit returns: on_train_end waits for it
    steps = column(table, "Step").tolist()
    assert steps == list(range(1, 2 * STEPS + 1))
    assert column(table, "Epoch").tolist() == [0] * STEPS + [1] * STEPS
    assert column(table, "Rows").tolist() == expected_rows(steps)
    assert epoch_end_steps(table) == [STEPS, 2 * STEPS]
    assert np.all(column(table, "RowsPerSec") > 0)
    assert np.all(np.diff(column(table.view("T = epochNanos(Time)"), "T")) >= 0)

    ends = table.where("EpochEnd")
    for name in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(column(ends, name), history.history[name], rtol=1e-7)
    assert np.all(column(table.where("!EpochEnd"), "val_loss") == NULL_DOUBLE)  # null, not NaN
    assert np.all(np.isfinite(column(table, "loss")))


def test_table_ticks_before_fit_returns(data):
    import keras

    train, _ = data
    metrics = MetricsTable()
    seen: dict[str, int] = {}

    def wait_for(rows: int) -> int:
        deadline = time.monotonic() + WAIT_S
        while metrics.table.size < rows and time.monotonic() < deadline:
            time.sleep(0.01)
        return metrics.table.size

    class Observer(keras.callbacks.Callback):
        """Runs after MetricsTable on the fit thread, so fit is still running while it looks."""

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 0 and batch == 8:  # step 9: the rows of steps 1..8 are out of the buffer
                seen["mid_epoch"] = wait_for(8)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            seen.setdefault("epoch_end", wait_for(STEPS))

    new_model().fit(train, epochs=2, callbacks=[metrics, Observer()], verbose=0, shuffle=False)
    assert seen == {"mid_epoch": 8, "epoch_end": STEPS}
    assert metrics.table.size == 2 * STEPS


def test_every_n_steps_plus_epoch_ends_and_a_second_fit_continues(data):
    from deephaven.constants import NULL_DOUBLE

    train, _ = data
    metrics = MetricsTable(every=5)
    model = new_model()
    history = model.fit(train, epochs=2, callbacks=[metrics], verbose=0, shuffle=False)
    table = metrics.table
    assert metrics.columns == ["loss", "mae", "val_loss", "val_mae"]  # val_* fixed up front, null here
    assert column(table, "Step").tolist() == [5, 10, 15, 16, 20, 25, 30, 32]
    assert epoch_end_steps(table) == [16, 32]
    assert column(table, "Rows").tolist() == expected_rows([5, 10, 15, 16, 20, 25, 30, 32])
    np.testing.assert_allclose(column(table.where("EpochEnd"), "loss"), history.history["loss"], rtol=1e-7)
    assert np.all(column(table, "val_loss") == NULL_DOUBLE)

    model.fit(train, epochs=1, callbacks=[metrics], verbose=0, shuffle=False)  # the same table: Step and Rows go on
    assert column(table, "Step").tolist()[8:] == [35, 40, 45, 48]
    assert column(table, "Epoch").tolist()[8:] == [0, 0, 0, 0]
    assert column(table, "Rows").tolist()[8:] == expected_rows([35, 40, 45, 48])


def test_every_epoch_with_validation_data(data):
    train, valid = data
    metrics = MetricsTable(every="epoch")
    history = new_model().fit(train, epochs=3, validation_data=valid, callbacks=[metrics], verbose=0, shuffle=False)
    table = metrics.table
    assert column(table, "Step").tolist() == [STEPS, 2 * STEPS, 3 * STEPS]
    assert epoch_end_steps(table) == [STEPS, 2 * STEPS, 3 * STEPS]
    assert column(table, "Epoch").tolist() == [0, 1, 2]
    assert column(table, "Rows").tolist() == [ROWS, 2 * ROWS, 3 * ROWS]  # counted before validation resets
    assert np.all(column(table, "RowsPerSec") > 0)
    for name in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(column(table, name), history.history[name], rtol=1e-7)


def test_declared_metrics_make_the_table_up_front_and_other_logs_are_ignored(data):
    train, valid = data
    metrics = MetricsTable(every="epoch", metrics=["loss", "val_loss"])
    table = metrics.table
    assert table.size == 0 and [c.name for c in table.columns][-2:] == ["loss", "val_loss"]
    with pytest.warns(UserWarning, match="ignoring the Keras log 'mae'"):
        history = new_model().fit(train, epochs=2, validation_data=valid, callbacks=[metrics], verbose=0, shuffle=False)
    assert "mae" not in [c.name for c in table.columns]
    np.testing.assert_allclose(column(table, "val_loss"), history.history["val_loss"], rtol=1e-7)


def test_table_before_the_first_log_raises(server):
    with pytest.raises(RuntimeError, match="created at the first logged step.*metrics="):
        MetricsTable().table  # noqa: B018


@pytest.mark.parametrize("every", [0, -1, True, False, "step", "Batch", 1.5, None])
def test_bad_every_raises_in_init(every):
    with pytest.raises(ValueError, match=r"MetricsTable: every must be 'batch', 'epoch' or an int >= 1 \(got "):
        MetricsTable(every=every)


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        ([], TypeError, "metrics must be None or a non-empty list"),
        ("loss", TypeError, "metrics must be None or a non-empty list"),
        ([1], TypeError, "metrics must hold strings"),
        (["loss", "loss"], ValueError, r"must not repeat a name \(got \['loss'\]"),
        (["Step"], ValueError, "'Step' cannot be a column: it is one of the fixed columns"),
        (["top-5"], ValueError, "'top-5' cannot be a column: it is not a valid Deephaven column name"),
    ],
)
def test_bad_metrics_raise_in_init(server, metrics, error, match):
    with pytest.raises(error, match=match):
        MetricsTable(metrics=metrics)


def test_is_a_keras_callback_and_importing_the_module_imports_no_keras_nor_deephaven(server):
    import keras

    metrics = MetricsTable()
    assert isinstance(metrics, keras.callbacks.Callback) and isinstance(metrics, MetricsTable)
    code = (
        "import sys, dh_tf.write.metrics_table\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'deephaven', 'jpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr


def test_plot_metrics_returns_a_figure(data, make_table):
    from deephaven.plot.figure import Figure

    train, valid = data
    metrics = MetricsTable(every="epoch")
    new_model().fit(train, epochs=1, validation_data=valid, callbacks=[metrics], verbose=0, shuffle=False)
    assert isinstance(plot_metrics(metrics), Figure)
    assert isinstance(plot_metrics(metrics.table), Figure)
    with pytest.raises(ValueError, match="plot_metrics: the table must have a Step column and at least one metric"):
        plot_metrics(make_table(3))
