"""dh_tf from plain Python: the embedded Deephaven server, an in-memory table, numpy and tf.data.

Run ``python examples/embedded_server.py``: ``dh_tf.server.start_server`` starts the engine inside
this process (``deephaven_server.Server``, one JVM per process; ``pip install 'dh-tf[server]'``),
after which ``deephaven`` imports. Pasted into the Deephaven IDE console it uses the running server.
Environment variables: DH_TF_EXAMPLE_ROWS (default 2,000,000), DH_TF_EXAMPLE_HEAP and
DH_TF_EXAMPLE_PORT (the embedded server, plain-Python runs only).
"""

import os

from dh_tf.server import ensure_server

# The IDE console already runs the engine; plain `python` starts the embedded server first
# (deephaven can only be imported once a JVM runs).
ensure_server(
    heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "256m"), port=int(os.environ.get("DH_TF_EXAMPLE_PORT", "10000"))
)
import time

import numpy as np
import tensorflow as tf
from deephaven import empty_table

import dh_tf
from dh_tf.diagnostics import memory_report

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "2000000"))
BATCH_SIZE = 4096

# An in-memory table: `update` computes and stores the columns in the JVM heap (2M rows x 4
# doubles + a long: ~76 MB). The label is the row id, so we can check that every row arrives once.
numbers = empty_table(NUM_ROWS).update(
    ["Id = (long)i", "A = (double)i", "B = Math.sqrt(i)", "C = Math.sin(i)", "D = (i % 7) * 0.5"]
)

# 1. Plain numpy: a TableLoader yields (x, y) batches, x float32 [batch, 4], y int64 [batch].
#    Each pass is one epoch; with shuffle=True the order is a pure function of (seed, epoch).
loader = dh_tf.TableLoader(numbers, ["A", "B", "C", "D"], "Id", batch_size=BATCH_SIZE, shuffle=True, seed=3)
start = time.perf_counter()
seen_ids = []
for x, y in loader:
    assert x.dtype == np.float32 and x.shape == (len(y), 4) and x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x[:, 0], y.astype(np.float32))  # A is the row id, row by row
    seen_ids.append(y)
numpy_seconds = time.perf_counter() - start
ids = np.concatenate(seen_ids)
assert len(seen_ids) == len(loader) == -(-NUM_ROWS // BATCH_SIZE)  # only the last batch is partial
assert len(ids) == NUM_ROWS and not np.array_equal(ids, np.arange(NUM_ROWS))  # shuffled...
np.testing.assert_array_equal(np.sort(ids), np.arange(NUM_ROWS))  # ...and every row exactly once
print(
    f"numpy: {len(seen_ids)} batches, {NUM_ROWS:,} rows in {numpy_seconds:.2f} s "
    f"({NUM_ROWS / numpy_seconds / 1e6:.1f} M rows/s)"
)

# 2. tf.data: the same options as TableLoader, as a re-iterable Dataset with a known cardinality.
dataset = dh_tf.to_dataset(numbers, ["A", "B", "C", "D"], "Id", batch_size=BATCH_SIZE)


@tf.function
def count_rows(ds):
    """Consumes one epoch in graph mode (measures the loader, not Python): rows and sum of ids."""
    return ds.reduce(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        lambda acc, batch: (acc[0] + tf.shape(batch[1], tf.int64)[0], acc[1] + tf.reduce_sum(batch[1])),
    )


count_rows(dataset)  # a first pass also traces the function: time the second
start = time.perf_counter()
tf_rows, tf_id_sum = (int(v) for v in count_rows(dataset))
tf_seconds = time.perf_counter() - start
assert int(dataset.cardinality()) == len(loader)
assert tf_rows == NUM_ROWS and tf_id_sum == NUM_ROWS * (NUM_ROWS - 1) // 2
print(
    f"tf.data: {int(dataset.cardinality())} batches, {tf_rows:,} rows in {tf_seconds:.2f} s "
    f"({tf_rows / tf_seconds / 1e6:.1f} M rows/s)"
)

memory = memory_report()
print(
    f"memory: peak RSS {memory.peak_rss_mib:,.0f} MiB; JVM heap used {memory.heap_used_mib:,.0f} MiB "
    f"of {memory.heap_max_mib:,.0f} MiB"
)
print(f"dh_tf example OK: embedded_server streamed {NUM_ROWS:,} rows through numpy and tf.data")
