"""A Parquet table several times bigger than the JVM heap, filtered with DQL, read for a full epoch.

Runs in a subprocess: it needs its own JVM with a small -Xmx.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_python

ROWS = 6_000_000
COLUMNS = 16
HEAP = "256m"

CHILD = """
import json, sys
import numpy as np
from dh_tf.server import start_server
start_server(heap=sys.argv[2], port=int(sys.argv[3]))
from deephaven import parquet
import dh_tf
from dh_tf.diagnostics import memory_report
table = parquet.read(sys.argv[1]).where("Id % 3 != 0")
loader = dh_tf.TableLoader(table, [f"F{i}" for i in range(16)], "Id", batch_size=65536, prefetch=2)
rows = 0
id_sum = 0
sum_f0 = 0.0
for x, y in loader:
    rows += len(y)
    id_sum += int(y.sum())
    sum_f0 += float(x[:, 0].sum(dtype=np.float64))
report = memory_report()
print(json.dumps(dict(rows=rows, id_sum=id_sum, sum_f0=sum_f0, batches=len(loader), heap_max_mib=report.heap_max_mib,
                      heap_peak_mib=report.heap_peak_mib, peak_rss_mib=report.peak_rss_mib)))
"""


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("big") / "big.parquet"
    schema = pa.schema([("Id", pa.int64())] + [(f"F{i}", pa.float64()) for i in range(COLUMNS)])
    step = 500_000
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, ROWS, step):
            ids = np.arange(start, start + step, dtype=np.int64)
            columns = [pa.array(ids)] + [pa.array((ids % 1000) * 0.001 + i) for i in range(COLUMNS)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=step)
    return path


@pytest.mark.slow
def test_full_epoch_of_a_table_three_times_the_heap(big_parquet):
    from conftest import free_port

    proc = run_python(CHILD, str(big_parquet), HEAP, str(free_port()), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OutOfMemoryError" not in proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    kept = np.arange(ROWS)[np.arange(ROWS) % 3 != 0]
    decoded_mib = ROWS * (COLUMNS + 1) * 8 / 2**20
    assert result["heap_max_mib"] * 3 < decoded_mib
    assert result["rows"] == len(kept) and result["id_sum"] == int(kept.sum())
    assert result["sum_f0"] == pytest.approx(float(((kept % 1000) * 0.001).astype(np.float32).sum(dtype=np.float64)), rel=1e-6)
    assert result["batches"] == -(-len(kept) // 65536)
