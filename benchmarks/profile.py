"""Where the time of one dh_tf epoch goes: Python (py-spy, run outside) and Java (JFR) sides.

Runs one epoch of ``to_dataset`` consumed in graph mode on the benchmark's Parquet file, with Java
Flight Recorder on, then prints the hottest Java methods (top frames of ``jdk.ExecutionSample``).
Python side: ``py-spy record -o profile.svg -- python -m benchmarks.profile ...``.

    .venv/bin/python -m benchmarks.profile --rows 20000000 [--shuffle] [--heap 1g]
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.data import FEATURES, LABEL, ensure_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench").expanduser())
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    path = ensure_parquet(args.data_dir, args.rows)
    recording = Path(tempfile.mkdtemp()) / "dh_tf.jfr"

    from dh_tf.server import start_server

    with socket.socket() as probe:  # a free loopback port for the server's IDE
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_server(heap=args.heap, port=port, jvm_args=[f"-XX:StartFlightRecording=filename={recording},settings=profile"])
    import tensorflow as tf
    from deephaven import parquet

    import dh_tf

    table = parquet.read(str(path))
    dataset = dh_tf.to_dataset(table, list(FEATURES), LABEL, batch_size=args.batch_size, shuffle=args.shuffle, seed=1)
    start = time.perf_counter()
    rows = int(dataset.reduce(tf.constant(0, tf.int64), lambda n, b: n + tf.cast(tf.shape(b[1])[0], tf.int64)))
    print(f"profile: {rows:,} rows in {time.perf_counter() - start:.1f} s")
    import jpy

    jpy.get_type("jdk.jfr.FlightRecorder").getFlightRecorder().getRecordings().get(0).dump(
        jpy.get_type("java.nio.file.Paths").get(str(recording), [])
    )
    print_hot_java_methods(recording, args.top)


def print_hot_java_methods(recording: Path, top: int) -> None:
    """Prints the methods most often on top of the stack in JFR's execution samples."""
    printed = subprocess.run(
        ["jfr", "print", "--json", "--events", "jdk.ExecutionSample", str(recording)],
        capture_output=True, text=True, check=True,
    ).stdout
    events = json.loads(printed)["recording"]["events"]
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        frames = event["values"]["stackTrace"]["frames"]
        if frames:
            method = frames[0]["method"]
            counts[f"{method['type']['name']}.{method['name']}"] += 1
    total = sum(counts.values())
    print(f"profile: hottest Java methods ({total} samples)")
    for method, count in counts.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {method}")


if __name__ == "__main__":
    main()
