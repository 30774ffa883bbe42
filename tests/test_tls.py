"""TLS: read, follow and write back over ``Session(..., use_tls=True, tls_root_certs=...)``; another CA refused.

The server runs in a process of its own (one JVM per process, and this session's server speaks plain
TCP), started by ``start_server(tls=...)`` with a CA and a server certificate made at test time by
``docker/make_tls_certs.sh`` (the compose demo's TLS option). It serves a static table, an
append-only table fed in that process, and the Docker demo's table; this process is a client only.
What the trainer writes back is read back from the server's scope over the same TLS session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TEST_PSK, free_port
from test_multi_worker import REMOTE_TRAINER, SUCCESS, run_example, without_engine

import dh_tf
from dh_tf.server import tls_jvm_args

PSK_AUTH = "io.deephaven.authentication.psk.PskAuthenticationHandler"
MAKE_CERTS = REPO / "docker" / "make_tls_certs.sh"
APP_SCRIPT = REPO / "docker" / "app.d" / "dh_tf_demo_data.py"
ROWS = 2_500
START_TIMEOUT_S = 240
LIFETIME_S = 900  # the server's own bound: it exits then whatever the test does

SERVER_SCRIPT = """
import os, sys, threading, __main__

port, psk, certs, app_script, lifetime = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
bound = threading.Timer(lifetime, os._exit, (3,))
bound.daemon = True
bound.start()
from dh_tf.server import start_server

start_server(heap="512m", port=port, psk=psk, tls=(os.path.join(certs, "server.pem"), os.path.join(certs, "server.key")))
from deephaven import dtypes, empty_table, new_table
from deephaven.column import double_col, long_col
from deephaven.stream import blink_to_append_only
from deephaven.stream.table_publisher import table_publisher

__main__.tls_static = empty_table({rows}).update(["Id = (long)i", "A = Math.sin(Id)", "B = (Id % 7) * 0.25"])
blink, publisher = table_publisher("tls_live", {{"Id": dtypes.int64, "X": dtypes.double}})
__main__.tls_live = blink_to_append_only(blink)


def feed():  # 100 rows every 0.1 s, Id counting on, X = Id / 2, until the process ends
    n = 0
    while True:
        ids = list(range(n, n + 100))
        publisher.add(new_table([long_col("Id", ids), double_col("X", [i / 2 for i in ids])]))
        n += 100
        threading.Event().wait(0.1)


threading.Thread(target=feed, daemon=True).start()
scope = {{"__name__": "dh_tf_demo_app"}}  # the Docker demo's table, made by its own start-up script
exec(compile(open(app_script).read(), app_script, "exec"), scope)
__main__.dh_tf_demo = scope["dh_tf_demo"]
print("READY", flush=True)
sys.stdin.readline()  # the test closes stdin to stop the server
os._exit(0)
"""


def make_certs(directory: Path) -> Path:
    result = subprocess.run(["sh", str(MAKE_CERTS), str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two CAs made now: ``good`` signed the server's certificate, ``other`` did not."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (docker/make_tls_certs.sh needs it)")
    root = tmp_path_factory.mktemp("tls")
    return {"good": make_certs(root / "good"), "other": make_certs(root / "other")}


@pytest.fixture(scope="module")
def tls_server(certs, tmp_path_factory):
    """The TLS server process; yields its port. Stopped (stdin closed, then killed) whatever happens."""
    work = tmp_path_factory.mktemp("tls-server")
    port = free_port()
    log = work / "server.log"
    env = {"DH_TF_DEMO_DIR": str(work / "demo"), "DH_TF_DEMO_ROWS": "20000",
           "DH_TF_EXAMPLES_SRC": str(work / "no-examples")}  # the demo table, no examples copied
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT.format(rows=ROWS), str(port), TEST_PSK, str(certs["good"]),
             str(APP_SCRIPT), str(LIFETIME_S)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**_clean_environ(), **env},
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "READY" not in log.read_text(errors="replace"):
            assert process.poll() is None, f"the TLS server exited:\n{log.read_text(errors='replace')[-4000:]}"
            assert time.monotonic() < deadline, f"the TLS server did not start:\n{log.read_text(errors='replace')[-4000:]}"
            time.sleep(0.5)
        yield port
    finally:
        process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DH_")}


def connect(port: int, ca: Path, **options):
    from pydeephaven import Session

    return Session(host="localhost", port=port, auth_type=PSK_AUTH, auth_token=TEST_PSK, use_tls=True,
                   tls_root_certs=(ca / "ca.pem").read_bytes(), **options)


@pytest.fixture(scope="module")
def session(tls_server, certs):
    session = connect(tls_server, certs["good"])
    yield session
    session.close()


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def features(ids: np.ndarray) -> np.ndarray:
    """``A, B`` of ``tls_static`` for these ids, as the server computes them."""
    return np.stack([np.sin(ids), (ids % 7) * 0.25], axis=1)


@pytest.mark.slow  # the TLS server's start alone takes 15-40 s
def test_reads_every_row_exactly_over_tls(session):
    table = session.open_table("tls_static")
    loader = dh_tf.TableLoader(table, ["A", "B"], "Id", batch_size=100, page_rows=1_000, shuffle=True, seed=3)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [100] * (ROWS // 100)
    ids = np.concatenate([y for _, y in batches])
    assert sorted(ids.tolist()) == list(range(ROWS)) and ids.tolist() != list(range(ROWS))  # each once, shuffled
    np.testing.assert_allclose(np.concatenate([x for x, _ in batches]), features(ids), rtol=1e-6)
    dataset = dh_tf.to_dataset(table.where("Id < 1000"), ["A", "B"], "Id", batch_size=256)
    ids = np.concatenate([y.numpy() for _, y in dataset])
    np.testing.assert_array_equal(ids, np.arange(1000))


@pytest.mark.slow  # the TLS server's start alone takes 15-40 s
def test_follows_a_live_table_over_tls(session):
    table = session.open_table("tls_live")
    rows = [y for _, y in dh_tf.follow(table, "X", "Id", batch_size=50, start="beginning", max_rows=1_000)]
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(1_000))  # every row once, in order
    fresh = [(x, y) for x, y in dh_tf.follow(table, "X", "Id", batch_size=50, start="now", max_rows=300)]
    ids = np.concatenate([y for _, y in fresh])
    np.testing.assert_array_equal(ids, np.arange(ids[0], ids[0] + 300))  # rows added while following
    np.testing.assert_array_equal(np.concatenate([x for x, _ in fresh]), ids / 2)


@pytest.mark.slow  # the TLS server's start alone takes 15-40 s
def test_writes_predictions_and_metrics_back_over_tls(session, keras):
    table = session.open_table("tls_static")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    metrics = dh_tf.MetricsTable(every="epoch", session=session, bind_as="tls_metrics")
    data = dh_tf.to_dataset(table, ["A", "B"], "Id", batch_size=500, label_dtype="float32")
    model.fit(data, epochs=2, callbacks=[metrics], shuffle=False, verbose=0)
    got = session.open_table("tls_metrics").to_arrow()  # bound in the server's scope
    assert got.column("Epoch").to_pylist() == [0, 1] and got.column("EpochEnd").to_pylist() == [True, True]

    result = dh_tf.predict_table(model, table, ["A", "B"], keep="Id", output="Score", page_rows=1_000,
                                 batch_size=250, bind_as="tls_scores")
    bound = session.open_table("tls_scores").to_arrow()
    ids = np.arange(ROWS)
    expected = model.predict(features(ids).astype(np.float32), verbose=0)[:, 0]
    for scores in (result.to_arrow(), bound):
        assert scores.column_names == ["Id", "Score"]
        np.testing.assert_array_equal(scores.column("Id").to_numpy(), ids)
        np.testing.assert_allclose(scores.column("Score").to_numpy(), expected, rtol=1e-5, atol=1e-6)
    result.close()


def error_chain(error: BaseException) -> str:
    texts = []
    while error is not None:
        texts.append(f"{error!r} {error}")
        error = error.__cause__ or error.__context__
    return " ".join(texts)


@pytest.mark.slow  # the TLS server's start alone takes 15-40 s
def test_a_client_trusting_another_ca_is_refused_without_echoing_the_key(tls_server, certs):
    """What a user sees: pydeephaven's DHError from ``Session(...)``, the handshake's reason in its cause."""
    from pydeephaven import DHError

    with pytest.raises(DHError, match="failed to get the configuration constants") as refused:
        connect(tls_server, certs["other"])
    chain = error_chain(refused.value)
    assert "CERTIFICATE_VERIFY_FAILED" in chain and TEST_PSK not in chain
    with pytest.raises(DHError, match="failed to get the configuration constants") as plain:  # nor plain TCP
        from pydeephaven import Session

        Session(host="localhost", port=tls_server, auth_type=PSK_AUTH, auth_token=TEST_PSK)
    assert TEST_PSK not in error_chain(plain.value)


@pytest.mark.slow  # the TLS server's start alone takes 15-40 s
def test_remote_trainer_example_over_tls(tls_server, certs, tmp_path):
    """examples/remote_trainer.py with DH_TLS_ROOT_CERTS, as the compose TLS option runs it (no engine)."""
    env = {"DH_HOST": "localhost", "DH_PORT": str(tls_server), "DH_PSK": TEST_PSK, "DH_TABLE": "dh_tf_demo"}
    returncode, output = run_example(REMOTE_TRAINER, {**env, **without_engine(tmp_path),
                                                      "DH_TLS_ROOT_CERTS": str(certs["good"] / "ca.pem")}, tmp_path, 300)
    assert returncode == 0, output[-4000:]
    assert any(line.startswith(SUCCESS) and "trained on 18,000 remote rows" in line for line in output.splitlines())
    returncode, output = run_example(REMOTE_TRAINER, {**env, "DH_TLS_ROOT_CERTS": str(certs["other"] / "ca.pem")},
                                     tmp_path, 120)
    assert returncode == 1, output[-4000:]
    assert f"remote_trainer: cannot open table 'dh_tf_demo' on localhost:{tls_server}" in output
    assert "CERTIFICATE_VERIFY_FAILED" in output and TEST_PSK not in output
    wrong_key = "not-the-key-over-tls-77"  # the example prints the gRPC cause's details: not the key either
    returncode, output = run_example(REMOTE_TRAINER, {**env, "DH_PSK": wrong_key,
                                                      "DH_TLS_ROOT_CERTS": str(certs["good"] / "ca.pem")}, tmp_path, 120)
    assert returncode == 1 and "remote_trainer: cannot open table" in output, output[-4000:]
    assert wrong_key not in output and TEST_PSK not in output


def test_tls_flags_are_the_engines_ssl_identity_settings_with_absolute_paths(certs, monkeypatch):
    monkeypatch.chdir(certs["good"])
    assert tls_jvm_args(("server.pem", Path("server.key"))) == [
        "-Dssl.identity.type=privatekey",
        f"-Dssl.identity.certChainPath={certs['good'] / 'server.pem'}",
        f"-Dssl.identity.privateKeyPath={certs['good'] / 'server.key'}",
    ]


@pytest.mark.parametrize("tls, error, message", [
    ("server.pem", dh_tf.ArgumentTypeError,
     r"tls must be a pair \(certificate_chain, private_key\) of PEM file paths \(got 'server.pem' of type str\)"),
    (("server.pem", 3), dh_tf.ArgumentTypeError, r"tls must be a pair .* \(got \('server.pem', 3\) of type tuple\)"),
    (("server.pem",), dh_tf.ArgumentError, r"tls must be a pair .* \(got \('server.pem',\)\)"),
    (("server.pem", "missing.key"), dh_tf.ArgumentError,
     r"tls private_key must be an existing PEM file \(got '/.*/missing.key'\)"),
])
def test_bad_tls_settings_are_refused_before_the_server_starts(certs, monkeypatch, tls, error, message):
    from dh_tf.server import start_server

    monkeypatch.chdir(certs["good"])
    with pytest.raises(error, match=rf"^start_server: {message}$"):
        tls_jvm_args(tls)
    with pytest.raises(error, match=message):  # before any JVM starts, or when one already runs
        start_server(port=free_port(), tls=tls)
