"""glibc malloc arenas and TensorFlow's reads in a process that embeds the engine (NOTE [ Malloc arenas ] in dh_tf/server.py).

Each pass is a fresh process (its own JVM): it starts the embedded server, reads one epoch of an
in-heap ``--rows`` x 16 float32 + int32 table through ``dh_tf.to_dataset`` (the engine's reader
threads), then times (a) TensorFlow reading the same bytes from files as batch-4096 records
(``FixedLengthRecordDataset`` + ``decode_raw``, no dh_tf involved) and (b) dh_tf's cached epochs
(``cache=True``: the epoch cache read on reader threads). The two settings alternate
process by process (capped, default, capped, default, ...): ``start_server``'s default cap of 2
arenas, and glibc's default (``MALLOC_ARENA_MAX=16``, 8 per core on 2 cores, which
``start_server`` leaves alone).

    .venv/bin/python -m benchmarks.malloc_arenas --out benchmarks/results/third-wave
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.report import machine_info, provenance, write_named_results

SETTINGS = {"capped (start_server default: 2)": None, "glibc default (MALLOC_ARENA_MAX=16)": "16"}
CHILD = r"""
import json, os, sys, time
import numpy as np
from dh_tf.server import start_server
start_server(heap="2g")
import tensorflow as tf
import dh_tf
from deephaven import empty_table
rows, passes, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
features = [f"F{i}" for i in range(16)]
table = empty_table(rows).update([f"F{i} = (float)((i * {i + 7}) % 1009) / 1009" for i in range(16)] + ["Label = (int)(i % 2)"])
count = lambda ds: int(ds.reduce(tf.constant(0, tf.int64), lambda n, e: n + tf.cast(tf.shape(e[1])[0], tf.int64)))
cached = dh_tf.to_dataset(table, features, "Label", batch_size=4096, cache=True)
assert count(cached) == rows  # epoch 1: the engine, on reader threads; fills the cache
x = np.random.default_rng(0).random((rows, 16), dtype=np.float32)
x.tofile(f"{directory}/x")
(np.arange(rows) % 2).astype(np.int32).tofile(f"{directory}/y")
whole = rows // 4096 * 4096
def records(name, size):
    return tf.data.FixedLengthRecordDataset(f"{directory}/{name}", 4096 * size, footer_bytes=(rows - whole) * size, buffer_size=1 << 20)
raw = tf.data.Dataset.zip((records("x", 64), records("y", 4))).map(
    lambda a, b: (tf.reshape(tf.io.decode_raw(a, tf.float32), [-1, 16]), tf.io.decode_raw(b, tf.int32)),
    num_parallel_calls=2, deterministic=True)
out = {"records": [], "cached_epochs": []}
for _ in range(passes):
    for name, ds, n in (("records", raw, whole), ("cached_epochs", cached, rows)):
        start = time.perf_counter()
        assert count(ds) == n
        out[name].append(n / (time.perf_counter() - start))
print("RESULT " + json.dumps(out), flush=True)
os._exit(0)
"""


def run_once(arenas: str | None, rows: int, passes: int) -> dict[str, list[float]]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if arenas is not None:
        env["MALLOC_ARENA_MAX"] = arenas
    with tempfile.TemporaryDirectory() as directory:
        done = subprocess.run([sys.executable, "-c", CHILD, str(rows), str(passes), directory], env=env,
                              capture_output=True, text=True, timeout=900, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"malloc_arenas child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--passes", type=int, default=5, help="timed passes per process")
    parser.add_argument("--processes", type=int, default=2, help="processes per setting, alternating")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/third-wave"))
    args = parser.parse_args()
    machine = machine_info()
    results: dict[str, dict[str, list[float]]] = {s: {"records": [], "cached_epochs": []} for s in SETTINGS}
    for _ in range(args.processes):
        for setting, arenas in SETTINGS.items():
            for key, values in run_once(arenas, args.rows, args.passes).items():
                results[setting][key].extend(values)
    lines = [
        "# Malloc arenas and TensorFlow reads beside the engine", "",
        provenance(f"python -m benchmarks.malloc_arenas --rows {args.rows} --passes {args.passes} "
                   f"--processes {args.processes}", machine), "",
        "M rows/s over every timed pass (processes alternate between the settings).", "",
        "| setting | read | min | median | max |", "|---|---|---|---|---|",
    ]
    for setting, reads in results.items():
        for read, values in reads.items():
            m = [v / 1e6 for v in values]
            lines.append(f"| {setting} | {read} | {min(m):.2f} | {statistics.median(m):.2f} | {max(m):.2f} |")
    write_named_results(args.out, "malloc_arenas", lines, machine, args, {"rows_per_s": results})


if __name__ == "__main__":
    main()
