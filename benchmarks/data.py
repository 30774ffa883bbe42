"""The benchmark data: ``rows`` x 16 float32 features ``F0..F15`` and an int32 ``Label``, as Parquet.

Rows are generated in blocks of ``ROW_GROUP_ROWS``, each from its own seeded RNG, so a file of N rows
is exactly the first N rows of any larger one (the batch-32 subset is a prefix of the big table).
The label is learnable: ``Label = (x @ WEIGHTS + noise > 0)``, about half ones.

Only numpy and pyarrow are imported here: the petastorm venv (numpy<2, pyarrow<15) imports it too.
"""

from __future__ import annotations

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
