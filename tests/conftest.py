"""Shared fixtures: one real embedded Deephaven server per pytest session.

Test modules import ``deephaven`` inside tests/fixtures only (it needs the running JVM).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
TEST_PSK = "dh-tf-test-psk"

# Property tests (test_properties.py) run the same examples every time in CI and `make test`, in a few
# seconds; HYPOTHESIS_PROFILE=thorough searches fresh random examples, many more of them.
settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None, database=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    """The embedded server (1 GiB heap, loopback, pre-shared key TEST_PSK), started once."""
    from dh_tf.server import start_server

    port = int(os.environ.get("DH_TF_TEST_PORT", free_port()))
    srv = start_server(heap="1g", port=port, psk=TEST_PSK)
    srv.test_port = port
    return srv


@pytest.fixture(scope="session")
def make_table(server):
    """Builds a static in-memory table: ``make_table(n, "A = (double)i", ...)``; ``Id = (long)i`` first."""
    from deephaven import empty_table

    def make(num_rows: int, *formulas: str):
        return empty_table(num_rows).update(["Id = (long)i", *formulas])

    return make


@pytest.fixture(scope="session")
def to_numpy(server):
    """``to_numpy(table, column)``: the public reference read of one column, 1-D."""
    from deephaven.numpy import to_numpy as dh_to_numpy

    return lambda table, column: dh_to_numpy(table, [column])[:, 0]


def run_python(code: str, *args: str, timeout: float = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Runs ``python -c code`` in a fresh process (its own JVM), returning the completed process."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def pytest_sessionfinish(session, exitstatus):
    session.config._dh_tf_exitstatus = int(exitstatus)


def pytest_unconfigure(config):
    """Leaves at once once pytest has reported, if this process embeds the JVM.

    Interpreter shutdown with a running embedded JVM (and TensorFlow's threads) can crash in
    finalizers after every test passed, turning a green run into a segfault exit status.
    """
    from dh_tf import server as dh_server

    if dh_server._server is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(getattr(config, "_dh_tf_exitstatus", 1))
