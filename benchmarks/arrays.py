"""Array columns vs the same values in scalar columns, read through dh_tf.TableLoader (engine path).

Standalone: starts its own embedded server. Builds, in the heap, one table holding ``--rows`` rows of
``--length`` doubles three ways: one ``double[]`` column, ``--length`` scalar ``double`` columns, and a
rolling window (``update_by(rolling_group_tick)``, ``DoubleVector`` cells) over one column; then
times full passes of a TableLoader over each (one reader thread, no prefetch, float32 output) and
prints bytes/s of delivered values (median of ``--passes`` warm passes). The target (issue 9) is
arrays >= 0.5x scalars.

    .venv/bin/python benchmarks/arrays.py --rows 200000 --length 32
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--heap", default="2g")
    args = parser.parse_args()

    import socket

    from dh_tf.server import start_server

    with socket.socket() as probe:  # a free loopback port for the embedded server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_server(heap=args.heap, port=port)
    from deephaven import empty_table
    from deephaven.updateby import rolling_group_tick

    import dh_tf

    n = args.length
    values = [f"Math.sin((i + {j}) * 0.001)" for j in range(n)]
    scalars = empty_table(args.rows).update([f"C{j} = {v}" for j, v in enumerate(values)])
    arrays = empty_table(args.rows).update(["A = new double[]{" + ", ".join(values) + "}"])
    base = empty_table(args.rows + n - 1).update(["X = Math.sin(i * 0.001)"])
    windows = base.update_by(rolling_group_tick(["W = X"], rev_ticks=n)).where(f"len(W) == {n}")
    cases = {
        f"{n} scalar double columns": (scalars, [f"C{j}" for j in range(n)]),
        f"one double[{n}] column": (arrays, "A"),
        f"rolling window DoubleVector[{n}]": (windows, "W"),
    }
    page_rows = max(4096, (32 << 20) // (4 * n) // 4096 * 4096)
    results = {}
    for name, (table, features) in cases.items():
        loader = dh_tf.TableLoader(table, features, batch_size=4096, page_rows=page_rows, reader_threads=1,
                                   prefetch=0, read_path="engine")
        times = []
        for _ in range(args.passes + 1):  # the first pass warms the JIT and the heap
            start = time.perf_counter()
            rows = sum(len(x) for x in loader.iter_groups())
            times.append(time.perf_counter() - start)
        assert rows == table.size, (rows, table.size)
        seconds = statistics.median(times[1:])
        results[name] = rows * n * 8 / seconds
        print(f"{name:34s} {rows:>9d} rows  {seconds:7.3f} s  {results[name] / 1e6:8.1f} MB/s (source doubles)")
    scalar = results[f"{n} scalar double columns"]
    for name, rate in results.items():
        print(f"{name:34s} {rate / scalar:5.2f}x scalar columns")


if __name__ == "__main__":
    main()
