"""Remote tables: a pydeephaven table read over Arrow Flight keeps every guarantee of an embedded one.

The client connects to the test session's embedded server (same process, real gRPC on loopback);
the "no JVM in the trainer" and "server killed mid-epoch" tests run the trainer or the server in
their own processes. Server-side exports are counted on the server's own ``SessionState``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import REPO, TEST_PSK, free_port, run_python

import dh_tf
from dh_tf.errors import RemoteReadError
from dh_tf.sources.remote import RemoteSource

PSK_AUTH = "io.deephaven.authentication.psk.PskAuthenticationHandler"
NUM_ROWS = 150_001
TYPED_COLUMNS = ["Id", "A", "F", "I", "Sh", "By", "B"]
FORMULAS = [
    "A = Id * 0.5",
    "F = (float)(Id % 1000) / 8.0f",
    "I = (int)(Id % 100000)",
    "Sh = (short)(Id % 30000)",
    "By = (byte)(Id % 100)",
    "B = Id % 3 == 0",
    "S = `s` + Id",
    "C = (char)(65 + Id % 26)",
]
NULL_FORMULAS = [
    "D = Id % 7 == 3 ? NULL_DOUBLE : (double)Id",
    "Bn = Id % 5 == 0 ? null : Id % 2 == 0",
    "In = Id % 11 == 4 ? NULL_INT : (int)Id",
]


def publish(name: str, table) -> None:
    """Makes a server-side table visible to client sessions (globals of the hosting ``__main__``)."""
    import __main__

    setattr(__main__, name, table)


def connect(port: int):
    from pydeephaven import Session

    return Session(port=port, auth_type=PSK_AUTH, auth_token=TEST_PSK)


def server_exports(session) -> int:
    """The number of exports the server holds for ``session`` (its ``SessionState``)."""
    import jpy

    server = jpy.get_type("io.deephaven.server.runner.DeephavenApiServer").getInstance()
    token = session._auth_header_value.decode().split()[-1]  # "Bearer <session token>"
    uuid = jpy.get_type("java.util.UUID").fromString(token)
    return int(server.sessionService().getSessionForToken(uuid).numExports())


@pytest.fixture(scope="module")
def tables(server, make_table):
    """The server-side tables, published under their names; the embedded originals by name."""
    embedded = {
        "typed": make_table(NUM_ROWS, *FORMULAS),
        "nulls": make_table(20_000, *NULL_FORMULAS),
        "empty": make_table(0, "A = Id * 0.5"),
    }
    for name, table in embedded.items():
        publish(f"remote_test_{name}", table)
    return embedded


@pytest.fixture(scope="module")
def session(server, tables):
    session = connect(server.test_port)
    yield session
    session.close()


@pytest.fixture(scope="module")
def remote(session):
    """The published tables, opened by the client."""
    return {name: session.open_table(f"remote_test_{name}") for name in ("typed", "nulls", "empty")}


@pytest.fixture(params=["embedded", "remote"])
def source_kind(request):
    return request.param


def pick(kind: str, tables, remote, name: str):
    return tables[name] if kind == "embedded" else remote[name]


def epoch(loader) -> list:
    return list(loader)


# --- the contract, parametrized over embedded vs remote ---------------------------------------------


@pytest.mark.parametrize("reader_threads", [1, 2])
def test_every_row_once_in_table_order_only_last_batch_partial(source_kind, tables, remote, reader_threads):
    table = pick(source_kind, tables, remote, "typed")
    loader = dh_tf.TableLoader(table, ["A", "F"], "Id", batch_size=1000, page_rows=20_500,
                               reader_threads=reader_threads)
    batches = epoch(loader)
    assert isinstance(loader.source, RemoteSource) == (source_kind == "remote")
    assert [len(y) for _, y in batches] == [1000] * 150 + [1]
    assert len(loader) == 151
    ids = np.concatenate([y for _, y in batches])
    assert np.array_equal(ids, np.arange(NUM_ROWS))
    x = np.concatenate([x for x, _ in batches])
    assert x.dtype == np.float32 and x.flags["C_CONTIGUOUS"] and x.shape == (NUM_ROWS, 2)
    assert np.array_equal(x[:, 0], (ids * 0.5).astype(np.float32))
    assert np.array_equal(x[:, 1], ((ids % 1000) / 8.0).astype(np.float32))


@pytest.mark.parametrize("reader_threads", [1, 2])
def test_seeded_shuffle_order_equals_the_embedded_one(tables, remote, reader_threads):
    options = dict(batch_size=1000, page_rows=30_000, shuffle=True, seed=7, reader_threads=reader_threads)
    local = dh_tf.TableLoader(tables["typed"], ["A", "By"], "Id", **options)
    far = dh_tf.TableLoader(remote["typed"], ["A", "By"], "Id", **options)
    orders = []
    for _ in range(2):
        local_batches, far_batches = epoch(local), epoch(far)
        assert len(far_batches) == len(local_batches) == 151
        for (lx, ly), (fx, fy) in zip(local_batches, far_batches):
            assert np.array_equal(fy, ly)
            assert np.array_equal(fx, lx)
        ids = np.concatenate([y for _, y in far_batches])
        assert np.array_equal(np.sort(ids), np.arange(NUM_ROWS))
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1])


def test_dtypes_and_values_equal_the_embedded_ones(tables, remote):
    for column in TYPED_COLUMNS:
        local = epoch(dh_tf.TableLoader(tables["typed"], "A", column, batch_size=50_000))
        far = epoch(dh_tf.TableLoader(remote["typed"], "A", column, batch_size=50_000))
        for (_, ly), (_, fy) in zip(local, far, strict=True):
            assert fy.dtype == ly.dtype, column
            assert np.array_equal(fy, ly), column
    _, y = next(iter(dh_tf.TableLoader(remote["typed"], "A", "B", batch_size=6, label_dtype="int8")))
    assert y.tolist() == [1, 0, 0, 1, 0, 0]  # Boolean: 1/0
    x = next(iter(dh_tf.TableLoader(remote["typed"], TYPED_COLUMNS, batch_size=5, dtype="float64")))
    assert x.dtype == np.float64 and x.shape == (5, 7)


def test_remote_column_types_are_the_engine_names(tables, remote):
    local = dh_tf.TableLoader(tables["typed"], "A").source.column_types
    far = RemoteSource(remote["typed"], "test").column_types
    assert far == local
    assert far["S"] == "java.lang.String" and far["C"] == "char" and far["B"] == "java.lang.Boolean"


def test_null_error_names_column_and_row_like_the_embedded_one(tables, remote):
    messages = []
    for table in (tables["nulls"], remote["nulls"]):
        with pytest.raises(dh_tf.NullValueError, match=r"column 'D' \(double\) holds a null at row position 3 ") as e:
            epoch(dh_tf.TableLoader(table, ["D"], "Id", batch_size=100))
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    with pytest.raises(dh_tf.NullValueError, match=r"column 'Bn' \(java.lang.Boolean\) holds a null at row position 0 "):
        epoch(dh_tf.TableLoader(remote["nulls"], ["Bn"], batch_size=100))


@pytest.mark.parametrize("reader_threads", [1, 2])
def test_nan_and_fill_policies_equal_the_embedded_ones(tables, remote, reader_threads):
    options = dict(batch_size=999, page_rows=4000, reader_threads=reader_threads, shuffle=True, seed=3,
                   nulls={"D": "nan", "Bn": -1, "In": 7})
    local = epoch(dh_tf.TableLoader(tables["nulls"], ["D", "Bn", "In"], "Id", **options))
    far = epoch(dh_tf.TableLoader(remote["nulls"], ["D", "Bn", "In"], "Id", **options))
    x = np.concatenate([x for x, _ in far])
    ids = np.concatenate([y for _, y in far])
    assert np.array_equal(x, np.concatenate([x for x, _ in local]), equal_nan=True)
    assert np.array_equal(np.isnan(x[:, 0]), ids % 7 == 3)
    expected_bn = np.where(ids % 5 == 0, -1, (ids % 2 == 0).astype(np.float32))
    assert np.array_equal(x[:, 1], expected_bn)
    assert np.array_equal(x[:, 2], np.where(ids % 11 == 4, 7, ids).astype(np.float32))


def test_dataset_cardinality_and_batches_equal_the_embedded_ones(tables, remote):
    import tensorflow as tf

    local = dh_tf.to_dataset(tables["typed"], ["A", "I"], "Id", batch_size=4096, drop_remainder=True)
    far = dh_tf.to_dataset(remote["typed"], ["A", "I"], "Id", batch_size=4096, drop_remainder=True)
    assert far.cardinality().numpy() == local.cardinality().numpy() == NUM_ROWS // 4096
    assert far.element_spec == local.element_spec
    count = 0
    for (lx, ly), (fx, fy) in zip(local, far):
        assert np.array_equal(fx.numpy(), lx.numpy()) and np.array_equal(fy.numpy(), ly.numpy())
        count += 1
    assert count == NUM_ROWS // 4096
    assert tf.data.experimental.cardinality(far).numpy() == count


def test_client_side_dql_equals_the_same_dql_embedded(tables, remote):
    local_table = tables["typed"].where("Id % 3 == 1").update_view("G = Id * 2")
    far_table = remote["typed"].where("Id % 3 == 1").update_view("G = Id * 2")
    local = epoch(dh_tf.TableLoader(local_table, ["G", "A"], "Id", batch_size=777, page_rows=10_000))
    far = epoch(dh_tf.TableLoader(far_table, ["G", "A"], "Id", batch_size=777, page_rows=10_000))
    ids = np.concatenate([y for _, y in far])
    assert np.array_equal(ids, np.arange(1, NUM_ROWS, 3))
    assert np.array_equal(np.concatenate([x for x, _ in far]), np.concatenate([x for x, _ in local]))
    far_table.close()


def test_empty_remote_table_gives_an_empty_epoch(remote):
    loader = dh_tf.TableLoader(remote["empty"], "A", batch_size=10)
    assert len(loader) == 0 and epoch(loader) == []


# --- refreshing tables ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ticking(server):
    """50k rows whose V changes every update cycle (cycles every 5 ms during this module's ticking tests)."""
    import jpy
    from deephaven import empty_table, time_table
    from deephaven.execution_context import get_exec_ctx

    graph = jpy.cast(get_exec_ctx().update_graph.j_update_graph,
                     jpy.get_type("io.deephaven.engine.updategraph.impl.PeriodicUpdateGraph"))
    before = graph.getTargetCycleDurationMillis()
    graph.setTargetCycleDurationMillis(5)
    ticker = time_table("PT0.005s").view("V = ii").last_by()
    table = empty_table(50_000).update("Id = (long)i").join(ticker).update_view(["A = V + Id", "B = 2 * (V + Id)"])
    deadline = time.time() + 10
    while table.size == 0 and time.time() < deadline:
        time.sleep(0.05)
    publish("remote_test_ticking", table)
    yield table
    graph.setTargetCycleDurationMillis(before)


def test_refreshing_remote_table_reads_one_consistent_snapshot_per_epoch(ticking, session):
    far = session.open_table("remote_test_ticking")
    loader = dh_tf.TableLoader(far, ["Id", "A"], "B", batch_size=4096, page_rows=8192, dtype="float64",
                               label_dtype="float64", reader_threads=2)
    assert loader.source.is_refreshing
    # the server may report size 0 for a new refreshing export: len() must count from a snapshot
    assert [len(loader) for _ in range(8)] == [13] * 8
    start = server_exports(session)
    cycles = set()
    deadline = time.time() + 4
    while time.time() < deadline:
        batches = epoch(loader)
        ids = np.concatenate([x[:, 0] for x, _ in batches])
        a = np.concatenate([x[:, 1] for x, _ in batches])
        b = np.concatenate([y for _, y in batches])
        assert np.array_equal(ids, np.arange(50_000))
        v = a - ids
        assert np.all(v == v[0]), "rows of one epoch come from different update cycles"
        assert np.array_equal(b, 2 * a), "a row mixes values from two update cycles"
        cycles.add(v[0])
        time.sleep(0.1)
    assert len(cycles) >= 2, "the table did not tick during the test"
    assert server_exports(session) == start  # each epoch's snapshot released
    import tensorflow as tf

    ds = dh_tf.to_dataset(far, ["A"], "B", batch_size=10_000, dtype="float64", label_dtype="float64")
    assert ds.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    assert sum(int(tf.shape(y)[0]) for _, y in ds) == 50_000
    far.close()


# --- server-side exports are released --------------------------------------------------------------


@pytest.mark.parametrize("reader_threads", [1, 2])
def test_exports_return_to_start_after_an_epoch_a_break_and_an_error(session, remote, reader_threads):
    start = server_exports(session)
    loader = dh_tf.TableLoader(remote["typed"], ["A"], "Id", batch_size=1000, page_rows=10_000,
                               reader_threads=reader_threads, shuffle=True, seed=1)
    epoch(loader)
    assert server_exports(session) == start
    batches = iter(loader)
    next(batches)
    # while reading: the epoch's view plus at most one slice per reader thread
    assert start <= server_exports(session) <= start + 1 + reader_threads
    batches.close()  # a break mid-epoch
    assert server_exports(session) == start
    with pytest.raises(dh_tf.NullValueError):
        epoch(dh_tf.TableLoader(remote["nulls"], ["D"], batch_size=100, page_rows=1000,
                                reader_threads=reader_threads))
    assert server_exports(session) == start


# --- bad input -------------------------------------------------------------------------------------


def test_table_of_a_closed_session_is_refused_before_reading(server, tables):
    other = connect(server.test_port)
    table = other.open_table("remote_test_typed")
    other.close()
    with pytest.raises(ValueError, match=rf"TableLoader: the table's pydeephaven Session \(server localhost:{server.test_port}\) is closed"):
        dh_tf.TableLoader(table, "A", "Id")


def test_closed_table_is_refused(session):
    table = session.open_table("remote_test_typed")
    table.close()
    with pytest.raises(ValueError, match=r"TableLoader: the pydeephaven table was closed"):
        dh_tf.to_dataset(table, "A", "Id")


@pytest.mark.parametrize(("column", "type_name"), [("C", "char")])
def test_unsupported_remote_column_is_named_with_its_type(remote, column, type_name):
    with pytest.raises(TypeError, match=rf"column\(s\) '{column}' \({type_name}\) must be numeric, boolean, "
                                          r"String or a timestamp"):
        dh_tf.TableLoader(remote["typed"], ["A", column], "Id")


def test_a_refused_key_fails_in_pydeephaven_without_echoing_it(server):
    from pydeephaven import DHError, Session

    secret = "wrong-key-do-not-echo-4711"
    with pytest.raises(DHError) as e:
        Session(port=server.test_port, auth_type=PSK_AUTH, auth_token=secret)
    chain, error = [], e.value
    while error is not None:
        chain.append(f"{error!r} {error}")
        error = error.__cause__ or error.__context__
    assert secret not in " ".join(chain)


# --- a dropped connection mid-epoch ----------------------------------------------------------------


def test_session_closed_mid_epoch_raises_naming_server_and_rows(server, tables):
    other = connect(server.test_port)
    loader = dh_tf.TableLoader(other.open_table("remote_test_typed"), ["A"], "Id", batch_size=1000,
                               page_rows=10_000, reader_threads=1, prefetch=0)
    batches = iter(loader)
    next(batches)
    closer = threading.Thread(target=other.close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive()
    with pytest.raises(RemoteReadError, match=rf"TableLoader: reading rows \[10000, 20000\) from Deephaven server "
                                              rf"localhost:{server.test_port} failed: .*Session is closed"):
        for _ in range(20):
            next(batches)


SERVER_SCRIPT = """
import sys, time, __main__
from dh_tf.server import start_server
start_server(heap="512m", port=int(sys.argv[1]), psk=sys.argv[2])
from deephaven import empty_table
__main__.big = empty_table(2_000_000).update(["Id = (long)i", "A = i * 0.5"])
print("READY", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_server_killed_mid_epoch_raises_naming_server_and_rows():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(port), TEST_PSK], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.stdout.readline().strip() != "READY":
            assert process.poll() is None, "the server process died"
        other = connect(port)
        loader = dh_tf.TableLoader(other.open_table("big"), ["A"], "Id", batch_size=10_000,
                                   page_rows=100_000, reader_threads=2)
        batches = iter(loader)
        next(batches)
        process.kill()
        process.wait(timeout=30)
        started = time.time()
        with pytest.raises(RemoteReadError, match=rf"TableLoader: reading rows \[\d+, \d+\) from Deephaven server "
                                                  rf"localhost:{port} failed"):
            for _ in range(200):
                next(batches)
        assert time.time() - started < 120
        batches.close()
    finally:
        process.kill()
        process.wait(timeout=30)


# --- no JVM in the trainer -------------------------------------------------------------------------


TRAINER_SCRIPT = """
import sys
import numpy as np
from pydeephaven import Session
import dh_tf

session = Session(port=int(sys.argv[1]), auth_type="{auth}", auth_token=sys.argv[2])
table = session.open_table("remote_test_typed").where("Id < 50000")
ids = np.concatenate([y for _, y in dh_tf.TableLoader(table, ["A", "B"], "Id", batch_size=4096, shuffle=True, seed=1)])
assert np.array_equal(np.sort(ids), np.arange(50000)), ids
ds = dh_tf.to_dataset(table, ["A", "B"], "Id", batch_size=4096)
assert sum(int(y.shape[0]) for _, y in ds) == 50000
session.close()
assert "jpy" not in sys.modules, "jpy loaded"
server_modules = [m for m in sys.modules if m == "deephaven" or m.startswith(("deephaven.", "deephaven_server"))]
assert not server_modules, server_modules
print("OK no JVM")
"""


@pytest.mark.slow
def test_trainer_process_reads_a_remote_table_without_a_jvm(server, tables):
    result = run_python(textwrap.dedent(TRAINER_SCRIPT.format(auth=PSK_AUTH)), str(server.test_port), TEST_PSK,
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK no JVM" in result.stdout


def test_page_size_follows_the_row_bytes_on_both_sources(tables, remote):
    """Bug 2: remote pages were 1M rows whatever the row width; the rule is one (NOTE [ Page size ])."""
    columns = TYPED_COLUMNS[1:]
    for kind, page_mib in (("embedded", 32), ("remote", 64)):
        table = pick(kind, tables, remote, "typed")
        narrow = dh_tf.TableLoader(table, columns[0], batch_size=100)
        wide = dh_tf.TableLoader(table, columns, batch_size=100, dtype="float64")
        assert narrow.page_rows == min(page_mib * 2**20 // 4 // 100 * 100, 4 * 2**20 // 100 * 100)
        assert wide.page_rows == page_mib * 2**20 // (8 * len(columns)) // 100 * 100
        assert wide.page_rows * 8 * len(columns) <= page_mib * 2**20


GATE_SCRIPT = """
import threading
from deephaven import empty_table

dh_tf_gate_open = threading.Event()
dh_tf_gate_entered = threading.Event()


def dh_tf_gate(i):
    if i >= 100_000:
        dh_tf_gate_entered.set()
        dh_tf_gate_open.wait(300)
    return i


dh_tf_gated = empty_table(200_000).update_view(["X = (double)dh_tf_gate(i)"])
"""


def test_break_cancels_a_remote_read_in_flight(session):
    """Bug 10: leaving an epoch waited for in-flight DoGets, up to the 600 s read timeout."""
    import threading

    import __main__

    session.run_script(GATE_SCRIPT)  # rows >= 100_000 are computed only once the gate opens
    loader = dh_tf.TableLoader(session.open_table("dh_tf_gated"), "X", batch_size=1000, page_rows=50_000,
                               reader_threads=2, prefetch=1)
    batches = iter(loader)
    try:
        assert np.array_equal(next(batches), np.arange(1000, dtype=np.float32))
        assert __main__.dh_tf_gate_entered.wait(60)  # a reader thread is inside a DoGet that cannot finish
        closer = threading.Thread(target=batches.close)
        closer.start()
        closer.join(60)  # generous; the DoGet would otherwise run until its 600 s timeout
        assert not closer.is_alive(), "leaving the epoch waited for the DoGet in flight"
        assert not [t for t in threading.enumerate() if t.name.startswith("dh_tf-reader")]
    finally:
        __main__.dh_tf_gate_open.set()
