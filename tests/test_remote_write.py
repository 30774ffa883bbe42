"""Results back to a remote server: predictions, live scores and training metrics of a pydeephaven trainer.

The client is a real pydeephaven Session to the test session's embedded server over loopback; what
lands on the server is read back through the server's own scope (``__main__``, where ``bind_table``
binds) and its ``SessionState`` export count (NOTE [ Remote write-back ] in
``dh_tf/write/remote_sink.py``, NOTE [ Remote metrics ] in ``dh_tf/write/remote_publisher.py``).
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from conftest import TEST_PSK, run_python
from test_remote import PSK_AUTH, connect, publish, server_exports
from test_remote_follow import Feed, wait_until

import __main__
import dh_tf
import dh_tf.write.metrics_rows

ROWS = 5_500
PAGE_ROWS = 1_000
T0_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


@pytest.fixture(scope="module")
def session(server):
    session = connect(server.test_port)
    yield session
    session.close()


@pytest.fixture(scope="module")
def source(make_table):
    """Features A, B; kept columns of String, Instant, int, Boolean types; published as ``remote_write_src``."""
    table = make_table(
        ROWS,
        "A = Math.sin(Id)",
        "B = (Id % 7) * 0.25",
        "S = `s` + Id",
        f"T = epochNanosToInstant({T0_NS}L + Id * 1000L)",
        "I = (int)(Id % 1000)",
        "Flag = Id % 3 == 0",
    )
    publish("remote_write_src", table)
    return table


def dense(keras, units: int):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(units)])
    rng = np.random.default_rng(3)
    model.layers[0].set_weights([rng.normal(size=(2, units)).astype("float32"), rng.normal(size=units).astype("float32")])
    return model


def features_of(table, columns=("A", "B")) -> np.ndarray:
    from deephaven.numpy import to_numpy

    return to_numpy(table, list(columns)).astype(np.float32)


class UploadSpy:
    """Records the rows of every ``import_table`` (Flight DoPut) of a session; calls the real one."""

    def __init__(self, session) -> None:
        self.rows: list[int] = []
        self._real = session.import_table
        self._session = session

    def __enter__(self) -> UploadSpy:
        def recording(data):
            self.rows.append(data.num_rows)
            return self._real(data)

        self._session.import_table = recording
        return self

    def __exit__(self, *exc_info) -> None:
        del self._session.import_table  # back to the class's method


def test_remote_predictions_equal_model_predict_row_for_row_on_the_server(keras, session, source):
    from deephaven.table import Table

    model = dense(keras, 3)
    remote = session.open_table("remote_write_src")
    gc.collect()  # earlier tests' dropped pydeephaven tables release their exports when collected
    before = server_exports(session)
    with UploadSpy(session) as uploads:
        result = dh_tf.predict_table(model, remote, ["A", "B"], keep=["Id", "S", "T", "I", "Flag"],
                                     output=["P0", "P1", "P2"], batch_size=100, page_rows=PAGE_ROWS,
                                     bind_as="remote_write_scores")
    # Page by page: the trainer never held more than one page of the result.
    assert uploads.rows == [PAGE_ROWS] * 5 + [500]
    # Every temporary export was released: the session holds the result only.
    assert server_exports(session) == before + 1
    assert not result.is_refreshing and result.size == ROWS
    assert [f.name for f in result.schema] == ["Id", "S", "T", "I", "Flag", "P0", "P1", "P2"]
    types = {f.name: f.metadata[b"deephaven:type"].decode() for f in result.schema}
    assert types == {"Id": "long", "S": "java.lang.String", "T": "java.time.Instant", "I": "int",
                     "Flag": "java.lang.Boolean", "P0": "float", "P1": "float", "P2": "float"}
    got = result.to_arrow()
    expected = model.predict(features_of(source), batch_size=1024, verbose=0)
    for k in range(3):
        np.testing.assert_allclose(got.column(f"P{k}").to_numpy(), expected[:, k], rtol=1e-6, atol=1e-6)
    ids = np.arange(ROWS)
    np.testing.assert_array_equal(got.column("Id").to_numpy(), ids)
    assert got.column("S").to_pylist() == [f"s{i}" for i in ids]
    np.testing.assert_array_equal(got.column("T").cast("int64").to_numpy(), T0_NS + ids * 1000)
    np.testing.assert_array_equal(got.column("I").to_numpy(), ids % 1000)
    assert got.column("Flag").to_pylist() == [bool(i % 3 == 0) for i in ids]
    # The result lives on the server: bound in its scope, an engine table with the same rows.
    bound = __main__.remote_write_scores
    assert isinstance(bound, Table) and bound.size == ROWS and not bound.is_refreshing
    np.testing.assert_array_equal(features_of(bound, ["P1"])[:, 0], got.column("P1").to_numpy())
    result.close()
    assert server_exports(session) == before
    del __main__.remote_write_scores


def test_remote_predictions_of_a_refreshing_table_and_without_keep(keras, session, server):
    from deephaven import time_table

    ticking = time_table("PT0.001S").update_view(["A = (double)i", "B = 1.0"])
    publish("remote_write_ticking", ticking)
    wait_until(lambda: ticking.size >= 50, "50 rows in the time table")
    model = dense(keras, 1)
    remote = session.open_table("remote_write_ticking")
    gc.collect()  # earlier tests' dropped pydeephaven tables release their exports when collected
    before = server_exports(session)
    result = dh_tf.predict_table(model, remote, ["A", "B"], output="Score", page_rows=20, batch_size=10)
    assert not result.is_refreshing and result.size >= 50
    assert [f.name for f in result.schema] == ["Score"]
    scores = result.to_arrow().column("Score").to_numpy()
    x = np.stack([np.arange(result.size), np.ones(result.size)], axis=1).astype(np.float32)
    np.testing.assert_allclose(scores, model.predict(x, verbose=0)[:, 0], rtol=1e-6, atol=1e-5)
    result.close()
    assert server_exports(session) == before


def test_an_error_mid_upload_leaves_nothing_bound_or_exported(keras, session, source, server):
    model = dense(keras, 1)
    calls = []

    def failing(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise ValueError("model failed on the 2nd batch")
        return model(x, training=False)

    remote = session.open_table("remote_write_src")
    gc.collect()  # earlier tests' dropped pydeephaven tables release their exports when collected
    before = server_exports(session)
    with pytest.raises(ValueError, match="model failed on the 2nd batch"):
        dh_tf.predict_table(failing, remote, ["A", "B"], keep=["Id", "S"], page_rows=PAGE_ROWS, batch_size=100,
                            bind_as="remote_write_failed")
    assert calls == [PAGE_ROWS, PAGE_ROWS]
    assert server_exports(session) == before
    assert not hasattr(__main__, "remote_write_failed")

    # A connection that drops mid-upload: a RemoteWriteError naming the server; nothing bound.
    other = connect(server.test_port)

    def dropping(x):
        calls.append(len(x))
        if len(calls) == 4:
            other.close()
        return model(x, training=False)

    with pytest.raises(dh_tf.RemoteWriteError, match=r"predict_table: uploading the predictions of rows "
                       r"\[1000, 2000\) on Deephaven server .*:\d+ failed: the pydeephaven Session is closed"):
        dh_tf.predict_table(dropping, other.open_table("remote_write_src"), ["A", "B"], keep="Id",
                            page_rows=PAGE_ROWS, batch_size=100, bind_as="remote_write_dropped")
    assert not hasattr(__main__, "remote_write_dropped")


def test_remote_argument_errors(keras, session, source):
    model = dense(keras, 1)
    remote = session.open_table("remote_write_src")
    with pytest.raises(dh_tf.ArgumentError, match=r"predict_table: directory must be None for a remote"):
        dh_tf.predict_table(model, remote, ["A", "B"], directory="/tmp/x")
    with pytest.raises(dh_tf.ArgumentError, match=r"predict_table: bind_as is for remote \(pydeephaven\) tables"):
        dh_tf.predict_table(model, source, ["A", "B"], bind_as="x")
    with pytest.raises(dh_tf.ArgumentError, match=r"predict_table: bind_as must be a Python identifier \(got 'a b'\)"):
        dh_tf.predict_table(model, remote, ["A", "B"], bind_as="a b")
    with pytest.raises(dh_tf.ArgumentError, match=r"keep must name columns of the table \(got unknown \['Nope'\]"):
        dh_tf.predict_table(model, remote, ["A", "B"], keep=["Id", "Nope"])
    with pytest.raises(dh_tf.ArgumentTypeError, match=r"predict_follow: keep column 'S' has type java.lang.String"):
        dh_tf.predict_follow(model, session.open_table("remote_write_src"), ["A", "B"], keep="S")
    with pytest.raises(dh_tf.ArgumentError, match=r"MetricsTable: bind_as needs session="):
        dh_tf.MetricsTable(bind_as="m")
    with pytest.raises(dh_tf.ArgumentTypeError, match=r"MetricsTable: session must be a pydeephaven.Session"):
        dh_tf.MetricsTable(session="localhost:10000")


def test_remote_live_scores_equal_model_predict_on_the_published_rows_in_order(keras, session, server):
    feed = Feed()
    publish(f"{feed.name}_typed", feed.table.update_view([f"T = epochNanosToInstant({T0_NS}L + Id)",
                                                          "Flag = Id % 3 == 0 ? null : Id % 3 == 1"]))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2)])
    feed.add(2)  # rows already there: scored with start="beginning"
    remote = session.open_table(f"{feed.name}_typed")
    gc.collect()  # earlier tests' dropped pydeephaven tables release their exports when collected
    before = server_exports(session)
    live = dh_tf.predict_follow(model, remote, ["X"], keep=["Id", "T", "Flag"],
                                output=["P0", "P1"], batch_size=256, max_wait=0.1, start="beginning",
                                bind_as="remote_write_live")
    try:
        assert live.blink is None and live.table.is_refreshing
        bound = __main__.remote_write_live
        feed.add(3)
        wait_until(lambda: bound.size == feed.rows, f"{feed.rows} live scores on the server")
        wait_until(lambda: live.scored_rows == feed.rows, "the scoring thread's count")  # counted after the add
        assert live.error is None
    finally:
        assert live.stop(timeout_s=30)
    assert not [t for t in threading.enumerate() if t.name == "dh_tf-predict-follow"]
    got = live.table.to_arrow()
    types = {f.name: f.metadata[b"deephaven:type"].decode() for f in got.schema}
    assert types == {"Id": "long", "T": "java.time.Instant", "Flag": "java.lang.Boolean", "P0": "float", "P1": "float"}
    ids = got.column("Id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(feed.rows))  # every row once, in order
    np.testing.assert_array_equal(got.column("T").cast("int64").to_numpy(), T0_NS + ids)
    assert got.column("Flag").to_pylist() == [None if i % 3 == 0 else i % 3 == 1 for i in ids]
    expected = model.predict((ids / 2).astype(np.float32)[:, None], verbose=0)
    np.testing.assert_allclose(got.column("P0").to_numpy(), expected[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.column("P1").to_numpy(), expected[:, 1], rtol=1e-6, atol=1e-6)
    live.table.close()
    assert server_exports(session) == before  # the kept columns' view, slices and uploads all released
    del __main__.remote_write_live


def test_metrics_rows_appear_on_the_server_during_fit(keras, session):
    from deephaven.plot.figure import Figure

    seen_during_fit = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:  # two epoch-end rows published by now, fit still running
                wait_until(lambda: __main__.remote_write_metrics.size >= 2, "2 metrics rows during fit", 60)
                seen_during_fit.append(__main__.remote_write_metrics.size)

    metrics = dh_tf.MetricsTable(every="epoch", metrics=["loss"], session=session, bind_as="remote_write_metrics")
    assert metrics.table.is_refreshing
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    history = model.fit(x, x[:, :1], batch_size=64, epochs=3, verbose=0, callbacks=[metrics, Watch()])
    assert seen_during_fit == [2]
    assert not [t for t in threading.enumerate() if t.name == "dh_tf-publish-remote"]  # ended by on_train_end
    got = metrics.table.to_arrow()
    assert got.column("Epoch").to_pylist() == [0, 1, 2]
    assert got.column("Step").to_pylist() == [4, 8, 12]
    assert got.column("Rows").to_pylist() == [256, 512, 768]
    assert got.column("EpochEnd").to_pylist() == [True, True, True]
    np.testing.assert_allclose(got.column("loss").to_numpy(), history.history["loss"], rtol=1e-6)
    # In the IDE (dh_tf installed on the server), plot_metrics works on the bound table; on the trainer it says where.
    assert isinstance(dh_tf.plot_metrics(__main__.remote_write_metrics), Figure)
    with pytest.raises(dh_tf.UsageError, match=r"plot_metrics: got a pydeephaven table; .* in the IDE"):
        dh_tf.plot_metrics(metrics)
    metrics.close()
    metrics.close()
    assert metrics.table.is_closed and __main__.remote_write_metrics.size == 3
    del __main__.remote_write_metrics


def test_rows_added_from_many_threads_are_each_published_once_and_counted(session):
    from dh_tf.write.remote_publisher import THREAD_NAME, RemoteRowPublisher

    publisher = RemoteRowPublisher(session, {"Thread": "int", "Row": "long"}, bind_as=None, interval_s=0.01,
                                   where="test")
    num_threads, num_rows = 8, 250
    start = threading.Barrier(num_threads)

    def add_rows(thread: int) -> None:
        start.wait()
        for row in range(num_rows):
            publisher.add({"Thread": thread, "Row": row})

    adders = [threading.Thread(target=add_rows, args=(k,)) for k in range(num_threads)]
    for adder in adders:
        adder.start()
    for adder in adders:
        adder.join()
    assert publisher.flush(60)
    assert publisher._num_added == publisher._num_published == num_threads * num_rows
    got = publisher.table.to_arrow()
    pairs = sorted(zip(got.column("Thread").to_pylist(), got.column("Row").to_pylist()))
    assert pairs == [(k, row) for k in range(num_threads) for row in range(num_rows)]
    publisher.close()
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_column_names_are_checked_without_a_jvm_as_the_engine_checks_them(server):
    from dh_tf.write.publisher import column_name_error

    names = ["loss", "val_loss", "a$b", "_x", "é", "a/b", "1a", "a b", "", "i", "ii", "k", "in", "not", "class",
             "true", "null", "int"]
    engine = [column_name_error(name) is None for name in names]
    code = (
        "import json, sys\n"
        "from dh_tf.write.publisher import column_name_error\n"
        f"print(json.dumps([column_name_error(n) for n in {names!r}]))\n"
        "assert 'deephaven' not in sys.modules\n"
    )
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    python = json.loads(done.stdout.strip().splitlines()[-1])
    assert [error is None for error in python] == engine
    assert python[names.index("a/b")] == 'Invalid column name "a/b"'
    assert python[names.index("ii")] == 'Invalid column name "ii": "ii" is a reserved keyword'


def test_a_trainer_without_a_jvm_writes_predictions_and_metrics_back(server, source):
    """The whole write-back path in a process that never starts a JVM (a remote trainer)."""
    code = f"""
import sys
import numpy as np, keras
from pydeephaven import Session
import dh_tf
session = Session(port={server.test_port}, auth_type="{PSK_AUTH}", auth_token="{TEST_PSK}")
def run():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    scores = dh_tf.predict_table(model, session.open_table("remote_write_src"), ["A", "B"], keep="S",
                                 page_rows=2000, batch_size=500, bind_as="remote_write_lean_scores")
    metrics = dh_tf.MetricsTable(every="epoch", session=session, bind_as="remote_write_lean_metrics")
    x = np.ones((64, 2), np.float32)
    model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[metrics])
    metrics.close()
    assert not [m for m in ("deephaven", "jpy", "deephaven_server") if m in sys.modules]
    print("rows", scores.size)
try:
    run()
finally:
    session.close()  # a pydeephaven table collected at exit with the Session open can hang the exit
"""
    done = run_python(code, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"rows {ROWS}"
    assert __main__.remote_write_lean_scores.size == ROWS
    metrics = __main__.remote_write_lean_metrics
    assert metrics.size == 2 and [c.name for c in metrics.columns][:6] == list(dh_tf.write.metrics_rows.FIXED_COLUMNS)
    assert "loss" in [c.name for c in metrics.columns]
    del __main__.remote_write_lean_scores, __main__.remote_write_lean_metrics
