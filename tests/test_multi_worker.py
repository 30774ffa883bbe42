"""Training on other machines, for real: two tf.distribute workers in two processes, and a remote trainer.

- ``examples/multi_worker.py`` launches two worker processes on localhost with ``TF_CONFIG`` and
  ``MultiWorkerMirroredStrategy`` (CPU); each reads its shard through
  ``strategy.distribute_datasets_from_function(lambda ctx: dh_tf.to_dataset(..., input_context=ctx))``
  and reports the ids of the rows it trained on (per epoch), its step counts and its final weights.
  Variant A: each worker embeds its own Deephaven server over the same Parquet file. Variant B:
  both read one table of this test session's server over pydeephaven, with no JVM of their own.
- ``examples/remote_trainer.py`` trains over pydeephaven against this session's server, on the
  table the Docker demo's start-up script makes (the table the compose ``trainer`` service reads).

NOTE [ Bounded multi-process tests ]
A worker whose peer died waits in a collective op, so nothing here may wait without a limit. The
example's launcher kills both workers when one fails or its own deadline (DH_TF_EXAMPLE_TIMEOUT)
passes, and every collective has a timeout (CommunicationOptions). The test starts the launcher in
a process group of its own, waits for it with a timeout, and kills the whole group (launcher and
workers) whatever happens, so no worker outlives the test.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import REPO, TEST_PSK

import __main__

MULTI_WORKER = REPO / "examples" / "multi_worker.py"
REMOTE_TRAINER = REPO / "examples" / "remote_trainer.py"
APP_SCRIPT = REPO / "docker" / "app.d" / "dh_tf_demo_data.py"
SUCCESS = "dh_tf example OK:"

NUM_ROWS = 4002  # ids 0..4001; FILTER ("Id % 10 != 0") keeps 3601: odd, so one row per epoch is left out
EPOCHS = 2
WORKER_TIMEOUT_S = 240  # the launcher's own deadline for both workers
LAUNCHER_TIMEOUT_S = WORKER_TIMEOUT_S + 60


def load_example() -> ModuleType:
    """examples/multi_worker.py as a module (its top level imports only the stdlib and numpy)."""
    spec = importlib.util.spec_from_file_location("multi_worker_example", MULTI_WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


# Installed as sitecustomize (through PYTHONPATH) into a process and every Python it starts: importing
# the embedded engine's modules fails there, as in the trainer image, which has none of them.
NO_ENGINE_SITECUSTOMIZE = """
import sys


class _NoEngine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("deephaven", "deephaven_server", "jpy"):
            raise ImportError(f"{name} is blocked: a remote trainer must not need the embedded engine")
        return None


sys.meta_path.insert(0, _NoEngine())
"""


def without_engine(tmp_path: Path) -> dict[str, str]:
    """Environment variables that block ``deephaven``, ``deephaven_server`` and ``jpy`` imports."""
    site = tmp_path / "no-engine-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_ENGINE_SITECUSTOMIZE)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}


def run_example(script: Path, env: dict[str, str], cwd: Path, timeout_s: float) -> tuple[int, str]:
    """Runs ``python script`` in its own process group; kills the group whatever happens.

    Returns the exit status and the combined output (NOTE [ Bounded multi-process tests ]).
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DH_", "TF_CONFIG"))}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=cwd,
        env={**clean, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"{script.name} did not finish within {timeout_s:.0f} s:\n{output[-6000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a failed launcher, if any
        except ProcessLookupError:
            pass
    return proc.returncode, output


def run_multi_worker(tmp_path: Path, env: dict[str, str]) -> list[dict[str, np.ndarray]]:
    returncode, output = run_example(
        MULTI_WORKER,
        {
            "DH_TF_EXAMPLE_DIR": str(tmp_path),
            "DH_TF_EXAMPLE_ROWS": str(NUM_ROWS),
            "DH_TF_EXAMPLE_EPOCHS": str(EPOCHS),
            "DH_TF_EXAMPLE_TIMEOUT": str(WORKER_TIMEOUT_S),
            **env,
        },
        tmp_path,
        LAUNCHER_TIMEOUT_S,
    )
    assert returncode == 0, f"multi_worker failed (exit {returncode}):\n{output[-8000:]}"
    assert any(line.startswith(SUCCESS) for line in output.splitlines()), output[-4000:]
    return [dict(np.load(tmp_path / f"worker-{index}.npz")) for index in range(example.NUM_WORKERS)]


def check_reports(reports: list[dict[str, np.ndarray]], table_ids: np.ndarray) -> None:
    """What sharded synchronous training promises, checked on what each worker trained on."""
    num_workers = example.NUM_WORKERS
    shard_rows = len(table_ids) // num_workers
    per_replica_batch = example.GLOBAL_BATCH // num_workers
    expected_steps = -(-shard_rows // per_replica_batch)
    assert len(table_ids) % num_workers == 1  # the fixture leaves exactly one row out per epoch
    for epoch in range(EPOCHS):
        ids = [r[f"ids_{epoch}"] for r in reports]
        for worker, worker_ids in enumerate(ids):
            assert worker_ids.dtype == np.int64 and worker_ids.shape == (shard_rows,), (worker, worker_ids.shape)
            assert len(np.unique(worker_ids)) == shard_rows, f"epoch {epoch}: worker {worker} saw a row twice"
            assert int(reports[worker][f"steps_{epoch}"]) == expected_steps, (epoch, worker)
        assert not np.intersect1d(ids[0], ids[1]).size, f"epoch {epoch}: a row reached both workers"
        seen = np.concatenate(ids)
        assert np.isin(seen, table_ids).all(), f"epoch {epoch}: a row the DQL filter removed was read"
        assert len(np.setdiff1d(table_ids, seen)) == len(table_ids) - num_workers * shard_rows == 1
    for worker, report in enumerate(reports):
        assert not np.array_equal(report["ids_0"], report["ids_1"]), f"worker {worker}: epoch 1 not reshuffled"

    weights = [r["weights"] for r in reports]
    assert weights[0].dtype == np.float32 and weights[0].size == 8 * 32 + 32 + 32 + 1  # Dense(32), Dense(1)
    assert np.isfinite(weights[0]).all()
    np.testing.assert_array_equal(weights[0], weights[1])  # bit for bit: synchronous training
    accuracy = [float(r[f"accuracy_{EPOCHS - 1}"]) for r in reports]
    assert accuracy[0] == accuracy[1] > 0.75, accuracy  # reduced over both workers' rows


@pytest.mark.slow
def test_two_workers_each_with_an_embedded_server_over_one_parquet_file(tmp_path: Path) -> None:
    """Variant A: each worker starts its own embedded server and reads its shard of the same Parquet file."""
    reports = run_multi_worker(tmp_path, {})
    assert (tmp_path / f"multi_worker-{NUM_ROWS}.parquet").is_file()  # written once, by the launcher
    ids = np.arange(NUM_ROWS, dtype=np.int64)
    check_reports(reports, ids[ids % 10 != 0])
    assert all(bool(r["jvm"]) for r in reports)


@pytest.fixture
def published(server) -> Any:
    """``published(name, table)`` makes ``table`` visible to pydeephaven sessions (a console global,
    NOTE [ Where console globals live ] in test_examples.py); removed afterwards."""
    names = []

    def publish(name: str, table: Any) -> None:
        setattr(__main__, name, table)
        names.append(name)

    yield publish
    for name in names:
        delattr(__main__, name)


@pytest.mark.slow
def test_two_workers_read_one_server_over_pydeephaven(server, published, tmp_path: Path) -> None:
    """Variant B: both workers read one table of this session's server; no JVM in the workers, which
    cannot even import the embedded engine's modules."""
    from deephaven import parquet

    path = tmp_path / "shared.parquet"
    example.write_parquet(path, NUM_ROWS)
    published("dh_tf_multi_worker", parquet.read(str(path)))
    reports = run_multi_worker(
        tmp_path,
        {
            "DH_HOST": "localhost",
            "DH_PORT": str(server.test_port),
            "DH_PSK": TEST_PSK,
            "DH_TABLE": "dh_tf_multi_worker",
            **without_engine(tmp_path),
        },
    )
    ids = np.arange(NUM_ROWS, dtype=np.int64)
    check_reports(reports, ids[ids % 10 != 0])
    assert not any(bool(r["jvm"]) for r in reports)


@pytest.fixture
def demo_table(server, published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Docker demo's table ``dh_tf_demo`` (20,000 rows), made by the image's own start-up script
    on this session's server; returns its name."""
    monkeypatch.setenv("DH_TF_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("DH_TF_DEMO_ROWS", "20000")
    monkeypatch.setenv("DH_TF_EXAMPLES_SRC", str(tmp_path / "no-examples"))  # copy no examples anywhere
    scope: dict[str, Any] = {"__name__": "dh_tf_demo_app"}
    exec(compile(APP_SCRIPT.read_text(), str(APP_SCRIPT), "exec"), scope)
    assert scope["dh_tf_demo"].size == 20_000
    published("dh_tf_demo", scope["dh_tf_demo"])
    return "dh_tf_demo"


@pytest.mark.slow
def test_remote_trainer_trains_over_pydeephaven(server, demo_table: str, tmp_path: Path) -> None:
    """examples/remote_trainer.py, as the compose ``trainer`` service runs it: host, port, key and
    table from the environment, without the embedded engine's modules (the trainer image has none); it
    prints the validation accuracy."""
    env = {"DH_HOST": "localhost", "DH_PORT": str(server.test_port), "DH_PSK": TEST_PSK, "DH_TABLE": demo_table}
    returncode, output = run_example(REMOTE_TRAINER, {**env, **without_engine(tmp_path)}, tmp_path, 300)
    assert returncode == 0, f"remote_trainer failed (exit {returncode}):\n{output[-6000:]}"
    lines = output.splitlines()
    assert f"rows: train 18,000, validation 2,000 (table dh_tf_demo on localhost:{server.test_port})" in lines
    success = [line for line in lines if line.startswith(SUCCESS)]
    assert len(success) == 1 and "remote_trainer trained on 18,000 remote rows" in success[0], output[-3000:]
    assert float(success[0].rsplit(" ", 1)[1]) >= 0.8


@pytest.mark.slow
def test_remote_trainer_refused_key_fails_clearly_without_echoing_it(server, demo_table: str, tmp_path: Path) -> None:
    wrong_key = "not-the-key-5d1f"
    env = {"DH_HOST": "localhost", "DH_PORT": str(server.test_port), "DH_PSK": wrong_key, "DH_TABLE": demo_table}
    returncode, output = run_example(REMOTE_TRAINER, env, tmp_path, 120)
    assert returncode == 1, output[-3000:]
    assert f"remote_trainer: cannot open table 'dh_tf_demo' on localhost:{server.test_port}" in output
    assert wrong_key not in output and TEST_PSK not in output
