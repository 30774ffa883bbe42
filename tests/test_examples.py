"""The examples under examples/, run the two ways a user runs them.

1. ``python examples/<name>.py`` in a fresh process: the example starts its own embedded server.
2. Through the IDE console's code path: ``pydeephaven.Session.run_script(source)`` against the test
   session's embedded server, which runs the code exactly as the web IDE console does. Afterwards the
   tables and the model the example made are globals of the console: we open the tables over gRPC
   and check the model with a second script, which publishes a small result table we read back.

NOTE [ Where console globals live ]
The server's Python scope is the ``__main__`` module of the process that hosts the embedded server
(here: the pytest process), so the console's globals are also attributes of our ``__main__``; each
console test checks that too, and deletes the globals it created afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, TEST_PSK, free_port

import __main__

EXAMPLES_DIR = REPO / "examples"
SUCCESS = "dh_tf example OK:"
RESULT_TABLE = "dh_tf_example_result"
PSK_AUTH = "io.deephaven.authentication.psk.PskAuthenticationHandler"


@dataclass(frozen=True)
class Example:
    """One example: its small size, the tables it leaves behind, and a check of its other globals."""

    name: str
    num_rows: int
    tables: dict[str, tuple[int, tuple[str, ...]]]  # global name -> (rows, columns it must have)
    check_script: str  # asserts on the console globals and publishes RESULT_TABLE (Name, Value)
    expected_results: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> [lo, hi]

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / f"{self.name}.py"


_PUBLISH = f"""
from deephaven import new_table
from deephaven.column import double_col, string_col
{RESULT_TABLE} = new_table([string_col("Name", list(_results)), double_col("Value", list(_results.values()))])
"""

_MODEL_CHECK = """
import keras
assert isinstance(model, keras.Model), type(model)
_results = {
    "val_accuracy": history.history["val_accuracy"][-1],
    "num_params": float(model.count_params()),
    "epochs": float(len(history.history["loss"])),
}
"""

EXAMPLES = [
    Example(
        "quickstart",
        num_rows=200_000,
        tables={
            "table": (200_000, ("Id", *(f"X{n}" for n in range(8)), "Label")),
            "filtered": (-1, ("Id", "X7", "Label")),
        },
        check_script=_MODEL_CHECK + "assert model.input_shape == (None, 8), model.input_shape\n" + _PUBLISH,
        expected_results={"val_accuracy": (0.8, 1.0), "num_params": (321, 321), "epochs": (2, 2)},
    ),
    Example(
        "multi_input",
        num_rows=100_000,
        tables={
            "events": (100_000, ("Id", "A", "B", "C", "Flag", "AB", "Label")),
            "val": (20_000, ("Id", "Flag", "AB", "Label")),
            "train": (80_000, ("Id", "Flag", "AB", "Label")),
        },
        check_script=_MODEL_CHECK + "assert sorted(model.input) == ['flag', 'numeric'], model.input\n" + _PUBLISH,
        expected_results={"val_accuracy": (0.8, 1.0), "epochs": (2, 2)},
    ),
    Example(
        "lstm_windows",
        num_rows=20_000,
        tables={
            "windows": (19_984, ("Timestamp", "Ret", "WRet", "WAbs", "Up")),
            "train": (15_985, ("Timestamp", "WRet", "WAbs", "Up")),
            "test": (3_983, ("Timestamp", "WRet", "WAbs", "Up")),
        },
        check_script=_MODEL_CHECK + "assert model.input_shape == (None, 16, 2), model.input_shape\n" + _PUBLISH,
        expected_results={"val_accuracy": (0.6, 1.0), "epochs": (4, 4)},
    ),
    Example(
        "categorical",
        num_rows=100_000,
        tables={
            "trades": (100_000, ("Timestamp", "Sym", "Price", "Size", "Imbalance", "Ret", "LogSize", "Up")),
            "train": (80_000, ("Sym", "Ret", "LogSize", "Imbalance", "Up")),
            "val": (20_000, ("Sym", "Ret", "LogSize", "Imbalance", "Up")),
        },
        check_script=_MODEL_CHECK
        + "assert sorted(model.input) == ['num', 'sym'], model.input\n"
        + "assert lookup.vocabulary_size() == 101, lookup.vocabulary_size()\n"  # 100 symbols + OOV
        + "_results['accuracy_gain'] = val_accuracy - numeric_accuracy\n"
        + _PUBLISH,
        expected_results={"val_accuracy": (0.8, 1.0), "accuracy_gain": (0.05, 1.0), "epochs": (2, 2)},
    ),
    Example(
        "embedded_server",
        num_rows=100_000,
        tables={"numbers": (100_000, ("Id", "A", "B", "C", "D"))},
        check_script="""
import dh_tf
assert isinstance(loader, dh_tf.TableLoader), type(loader)
_results = {"tf_rows": float(tf_rows), "numpy_batches": float(len(seen_ids)), "loader_len": float(len(loader))}
"""
        + _PUBLISH,
        expected_results={"tf_rows": (100_000, 100_000), "numpy_batches": (25, 25), "loader_len": (25, 25)},
    ),
]


def example_env(example: Example, example_dir: Path) -> dict[str, str]:
    """The environment variables that make an example small and keep its files in ``example_dir``."""
    return {"DH_TF_EXAMPLE_ROWS": str(example.num_rows), "DH_TF_EXAMPLE_DIR": str(example_dir)}


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_as_script(example: Example, tmp_path: Path) -> None:
    """``python examples/<name>.py`` starts its own embedded server and ends with the success line."""
    env = {**os.environ, **example_env(example, tmp_path), "DH_TF_EXAMPLE_PORT": str(free_port())}
    proc = subprocess.run(
        [sys.executable, str(example.path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{example.name} failed (exit {proc.returncode}):\n{output[-6000:]}"
    assert any(line.startswith(SUCCESS) for line in proc.stdout.splitlines()), output[-6000:]


@pytest.fixture
def console(server):
    """A pydeephaven session on the test server, as the IDE console sees it; restores the env and
    removes the console globals a test created (NOTE [ Where console globals live ])."""
    from pydeephaven import Session

    env_before = dict(os.environ)
    globals_before = set(vars(__main__))
    session = Session(port=server.test_port, auth_type=PSK_AUTH, auth_token=TEST_PSK)
    try:
        yield session
    finally:
        session.close()
        for name in set(vars(__main__)) - globals_before:
            delattr(__main__, name)
        os.environ.clear()
        os.environ.update(env_before)


def console_code(example: Example, example_dir: Path) -> str:
    """The example's source with ``os.environ`` lines first, as a user would paste it in the console."""
    env_lines = "".join(f"os.environ[{k!r}] = {v!r}\n" for k, v in example_env(example, example_dir).items())
    return "import os\n" + env_lines + example.path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_in_console(example: Example, console, tmp_path: Path, capfd) -> None:
    """The example runs through ``run_script`` (the console's path); its tables and model stay as globals."""
    import pyarrow as pa

    console.run_script(console_code(example, tmp_path))  # raises DHError if the example's asserts fail
    out, _ = capfd.readouterr()  # the embedded server prints to this process's stdout
    assert any(line.startswith(SUCCESS) for line in out.splitlines()), out[-6000:]

    for name, (num_rows, columns) in example.tables.items():
        table: pa.Table = console.open_table(name).to_arrow()
        assert set(columns) <= set(table.column_names), (name, table.column_names)
        if num_rows >= 0:
            assert table.num_rows == num_rows, name
        assert hasattr(__main__, name)  # NOTE [ Where console globals live ]

    console.run_script(example.check_script)
    result = console.open_table(RESULT_TABLE).to_arrow().to_pydict()
    values = dict(zip(result["Name"], result["Value"]))
    for name, (low, high) in example.expected_results.items():
        assert low <= values[name] <= high, (name, values)


def test_console_globals_live_in_main(console) -> None:
    """Pins NOTE [ Where console globals live ]: a console variable is an attribute of ``__main__``."""
    console.run_script("dh_tf_probe_global = 42")
    assert getattr(__main__, "dh_tf_probe_global", None) == 42
