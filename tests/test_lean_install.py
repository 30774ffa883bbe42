"""A lean install (NOTE [ Lean installs ] in pyproject.toml): ``pip install 'dh-tf[remote]'`` in a clean venv.

dh_tf's wheel is built from a copy of the sources (nothing is written into the checkout), installed
with its ``remote`` extra into a new virtual environment without the system's site-packages, with
pip resolving the dependencies from the package index. That venv has no TensorFlow, no
deephaven-core and no jpy; a script run with it reads a table of this test session's embedded
server through ``dh_tf.TableLoader`` (numpy batches need no TensorFlow), follows a live remote
table with ``dh_tf.follow`` and gets a clear ``MissingDependencyError`` from ``dh_tf.to_dataset``.
Then ``tensorflow-cpu`` (the trainer's own choice) is added, and a second script reads and follows
the same tables through ``dh_tf.to_dataset``, still without deephaven-core or jpy. Skipped only
when the package index cannot be reached.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, TEST_PSK
from test_remote import PSK_AUTH, publish
from test_remote_follow import Feed

NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)
"""What pip prints when the package index cannot be reached (the only reason to skip)."""

LEAN_SCRIPT = """
import importlib.util
import sys

import numpy as np

import dh_tf

missing = [name for name in ("tensorflow", "deephaven", "jpy", "deephaven_server") if importlib.util.find_spec(name)]
assert not missing, f"a lean [remote] install must not have {missing}"
assert importlib.util.find_spec("pydeephaven") and importlib.util.find_spec("pyarrow")

from pydeephaven import Session

session = Session(port=int(sys.argv[1]), auth_type=sys.argv[2], auth_token=sys.argv[3])
table = session.open_table("lean_install_table").where("Id % 2 == 0")
batches = list(dh_tf.TableLoader(table, ["A"], "Id", batch_size=1000, shuffle=True, seed=3))
ids = np.concatenate([y for _, y in batches])
assert np.array_equal(np.sort(ids), np.arange(0, 20_000, 2)), ids
x = np.concatenate([x for x, _ in batches])
assert np.array_equal(x[:, 0], (ids * 0.25).astype(np.float32))
live = session.open_table("lean_install_live")  # append-only, 5,000 rows in already
followed = np.concatenate([y for _, y in dh_tf.follow(live, "X", "Id", batch_size=700, start="beginning",
                                                      max_rows=5000)])
assert np.array_equal(followed, np.arange(5000)), followed
try:
    dh_tf.to_dataset(table, ["A"], "Id", batch_size=1000)
except dh_tf.MissingDependencyError as error:
    assert isinstance(error, ImportError)
    print("MISSING:", error)
else:
    raise AssertionError("to_dataset worked without TensorFlow")
session.close()
assert "jpy" not in sys.modules and "tensorflow" not in sys.modules
print("LEAN OK", len(ids))
"""

WITH_TF_SCRIPT = """
import importlib.util
import sys

import numpy as np

import dh_tf

missing = [name for name in ("deephaven", "jpy", "deephaven_server") if importlib.util.find_spec(name)]
assert not missing, f"a lean [remote] install with TensorFlow must not have {missing}"

from pydeephaven import Session

session = Session(port=int(sys.argv[1]), auth_type=sys.argv[2], auth_token=sys.argv[3])
table = session.open_table("lean_install_table")
ds = dh_tf.to_dataset(table, ["A"], "Id", batch_size=1000, shuffle=True, seed=3)
ids = np.concatenate([y.numpy() for _, y in ds])
assert np.array_equal(np.sort(ids), np.arange(20_000)), ids
live = session.open_table("lean_install_live")
followed = dh_tf.to_dataset(live, "X", "Id", batch_size=500, follow=True, start="beginning", max_rows=5000)
ids = np.concatenate([y.numpy() for _, y in followed])
assert np.array_equal(ids, np.arange(5000)), ids
session.close()
assert "jpy" not in sys.modules
print("TF OK", len(ids))
"""


def run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd[:4])} ... ran past {timeout} s: {e.stderr!r:.2000}")


def pip_or_skip(result: subprocess.CompletedProcess, doing: str) -> None:
    """Fails on a pip error, except that an unreachable package index skips the test, saying so."""
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    if any(sign in output for sign in NETWORK_ERRORS):
        pytest.skip(f"{doing}: the package index cannot be reached: {output.strip()[-500:]}")
    pytest.fail(f"{doing} failed ({result.returncode}): {output[-3000:]}")


@pytest.mark.slow
def test_remote_extra_reads_a_remote_table_without_tensorflow_or_a_jvm(server, make_table, tmp_path):
    publish("lean_install_table", make_table(20_000, "A = Id * 0.25"))
    live = Feed()  # an append-only table fed by a table_publisher
    live.add(5)
    publish("lean_install_live", live.table)
    # dh_tf's wheel, from a copy of what the wheel holds (a build in the checkout would write build/ there)
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "dh_tf", source / "dh_tf", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(wheels),
                 str(source)], timeout=300)
    pip_or_skip(built, "building dh_tf's wheel")
    (wheel,) = wheels.glob("dh_tf-*.whl")

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "--disable-pip-version-check", f"{wheel}[remote]"],
                    timeout=600)
    pip_or_skip(installed, "pip install dh_tf[remote]")
    listed = run([str(python), "-m", "pip", "list", "--format=freeze"], timeout=120).stdout.lower().replace("_", "-")
    for absent in ("tensorflow", "deephaven-core", "deephaven-server", "jpy"):
        assert f"\n{absent}==" not in f"\n{listed}", f"{absent} installed by dh_tf[remote]:\n{listed}"
    assert "\npydeephaven==42.7" in f"\n{listed}" and "\npyarrow==" in f"\n{listed}"
    if sys.platform == "linux" and platform.machine() == "x86_64":  # the extra's marker
        assert "\npydeephaven-ticking==42.7" in f"\n{listed}", listed

    result = run([str(python), "-c", textwrap.dedent(LEAN_SCRIPT), str(server.test_port), PSK_AUTH, TEST_PSK],
                 timeout=300, cwd=tmp_path)  # not the checkout: `import dh_tf` must be the installed wheel
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "LEAN OK 10000" in result.stdout
    missing = next(line for line in result.stdout.splitlines() if line.startswith("MISSING:"))
    assert "needs TensorFlow: pip install tensorflow" in missing, missing
    assert TEST_PSK not in result.stdout + result.stderr

    tensorflow = next(line for line in (REPO / "requirements-dev.txt").read_text().splitlines()
                      if line.startswith("tensorflow-cpu=="))  # the version the rest of the suite runs
    added = run([str(python), "-m", "pip", "install", "--disable-pip-version-check", tensorflow], timeout=900)
    pip_or_skip(added, f"pip install {tensorflow}")
    result = run([str(python), "-c", textwrap.dedent(WITH_TF_SCRIPT), str(server.test_port), PSK_AUTH, TEST_PSK],
                 timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "TF OK 5000" in result.stdout
