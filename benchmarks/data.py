"""The benchmark data: ``rows`` x 16 float32 features ``F0..F15`` and an int32 ``Label``, as Parquet.

Rows are generated in blocks of ``ROW_GROUP_ROWS``, each from its own seeded RNG, so a file of N rows
is exactly the first N rows of any larger one (the batch-32 subset is a prefix of the big table).
The label is learnable: ``Label = (x @ WEIGHTS + noise > 0)``, about half ones.

A second copy of the same rows, written by Deephaven itself (``deephaven.parquet.write``, its
defaults), measures the engine on the file layout and encodings it writes (docs/design.md section 4):
``python -m benchmarks.data deephaven ROWS DATA_DIR HEAP`` writes it in a process with its own JVM.

Only numpy and pyarrow are imported at module level: the petastorm venv (numpy<2, pyarrow<15) imports it too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = [f"F{i}" for i in range(16)]
LABEL = "Label"
ROW_GROUP_ROWS = 1 << 20
"""Rows per Parquet row group (and per generated block): ~1M, as Parquet files usually have."""
WEIGHTS = np.linspace(-1.0, 1.0, len(FEATURES), dtype=np.float32)
SEED = 2024
ROW_BYTES = 4 * len(FEATURES) + 4
"""Decoded bytes per row: 16 float32 + one int32."""


def parquet_path(data_dir: Path, num_rows: int) -> Path:
    """Where the cached file of ``num_rows`` rows lives."""
    return Path(data_dir).expanduser() / f"bench_{num_rows}_rows.parquet"


def deephaven_parquet_path(data_dir: Path, num_rows: int) -> Path:
    """Where the Deephaven-written copy of the ``num_rows`` file lives."""
    return Path(data_dir).expanduser() / f"bench_{num_rows}_rows_deephaven.parquet"


def ensure_deephaven_parquet(data_dir: Path, num_rows: int, python: str = sys.executable, heap: str = "2g") -> Path:
    """Returns the Deephaven-written copy of the ``num_rows`` file, writing it first if missing.

    The copy is written by a child process (``python -m benchmarks.data deephaven ...``, its own
    embedded server with ``-Xmx{heap}``) to a temporary name and renamed when complete.

    Raises:
        RuntimeError: the child failed (the message ends with its output).
    """
    path = deephaven_parquet_path(data_dir, num_rows)
    if path.exists():
        return path
    ensure_parquet(data_dir, num_rows)
    print(f"data: writing {path.name} with deephaven.parquet.write", file=sys.stderr, flush=True)
    done = subprocess.run(
        [python, "-m", "benchmarks.data", "deephaven", str(num_rows), str(data_dir), heap],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    if done.returncode or not path.exists():
        raise RuntimeError(f"writing {path} failed: {(done.stderr or done.stdout)[-1500:]}")
    return path


def _write_deephaven_copy(data_dir: Path, num_rows: int, heap: str) -> None:
    """Child side of :func:`ensure_deephaven_parquet` (needs the embedded server)."""
    import socket

    from dh_tf.server import start_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    start_server(heap=heap, port=port)
    from deephaven import parquet

    path = deephaven_parquet_path(data_dir, num_rows)
    partial = path.with_name(path.stem + ".partial.parquet")
    parquet.write(parquet.read(str(parquet_path(data_dir, num_rows))), str(partial))
    partial.rename(path)


def ensure_parquet(data_dir: Path, num_rows: int) -> Path:
    """Returns the cached Parquet file of ``num_rows`` rows, writing it first if missing.

    Writes to a temporary name and renames, so an interrupted run never leaves a truncated file
    that a later run would take for a cached one. Prints progress to stderr.
    """
    path = parquet_path(data_dir, num_rows)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    schema = pa.schema([(name, pa.float32()) for name in FEATURES] + [(LABEL, pa.int32())])
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, num_rows, ROW_GROUP_ROWS):
            x, y = _block(start // ROW_GROUP_ROWS, min(ROW_GROUP_ROWS, num_rows - start))
            columns = [pa.array(x[:, i]) for i in range(len(FEATURES))] + [pa.array(y)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=ROW_GROUP_ROWS)
            done = start + len(y)
            print(f"data: wrote {done:,} / {num_rows:,} rows to {path.name}", file=sys.stderr, flush=True)
    partial.rename(path)
    return path


def _block(index: int, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, index])
    x = rng.standard_normal((num_rows, len(FEATURES)), dtype=np.float32)
    noise = rng.standard_normal(num_rows, dtype=np.float32)
    y = (x @ WEIGHTS + 0.5 * noise > 0).astype(np.int32)
    return x, y


def stack_features(columns: list[np.ndarray]) -> np.ndarray:
    """Stacks 1-D float32 columns into one C-ordered ``[rows, len(columns)]`` float32 array."""
    out = np.empty((len(columns[0]), len(columns)), dtype=np.float32)
    for i, column in enumerate(columns):
        out[:, i] = column
    return out


def arrow_to_numpy(batch: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the features of an Arrow table or record batch as ``[rows, 16]`` float32, the label int32."""
    x = stack_features([np.asarray(batch.column(name)) for name in FEATURES])
    return x, np.asarray(batch.column(LABEL))


def load_numpy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The whole file in memory, read with ``pyarrow.parquet.read_table``: ``(x, y)`` as above."""
    return arrow_to_numpy(pq.read_table(path, columns=[*FEATURES, LABEL]))


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "deephaven":
        sys.exit("usage: python -m benchmarks.data deephaven ROWS DATA_DIR HEAP")
    _write_deephaven_copy(Path(sys.argv[3]), int(sys.argv[2]), sys.argv[4])
    sys.stdout.flush()
    import os

    os._exit(0)  # skip interpreter teardown with a JVM in the process
