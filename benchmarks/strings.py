"""A String column vs a float64 column, read through dh_tf.TableLoader and to_dataset (engine path).

Standalone: starts its own embedded server. Builds, in the heap, a table of ``--rows`` rows with a
String column ``Sym`` (``--symbols`` distinct values with skewed frequencies, about 1% nulls filled
with ``"[UNK]"``) and a float64 column ``Price``; then times full passes over ``Price`` alone, ``Sym``
alone, and both (one reader thread, no prefetch): the TableLoader's numpy pages, and ``to_dataset``
consumed in graph mode (``ds.reduce``: ``tf.string`` tensors made from the ``str`` objects). Prints
the median of ``--passes`` warm passes as ns per row and the String / float64 ratio. The target
(issue 15) is a String column <= 3x a float64 column per row in the read path.

    .venv/bin/python benchmarks/strings.py --rows 2000000
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--heap", default="2g")
    args = parser.parse_args()

    import socket

    from dh_tf.server import start_server

    with socket.socket() as probe:  # a free loopback port for the embedded server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_server(heap=args.heap, port=port)
    import tensorflow as tf
    from deephaven import empty_table

    import dh_tf

    # Symbol k appears about 1 / (k + 1) as often as symbol 0 (a Zipf-like skew), as tickers do.
    table = empty_table(args.rows).update([
        "U = (double)((i * 2654435761L) % 1000003) / 1000003.0",
        f"Sym = i % 97 == 13 ? null : `SYM` + (long)Math.floor(Math.pow({args.symbols} + 1.0, U) - 1)",
        "Price = 100.0 + Math.sin(i * 0.001)",
    ])
    cases = {"float64 Price": "Price", "String Sym": "Sym", "String Sym + float64 Price": {"s": "Sym", "p": "Price"}}
    options = dict(batch_size=4096, page_rows=262_144, reader_threads=1, prefetch=0, read_path="engine",
                   dtype="float64", nulls={"Sym": "[UNK]"})
    results: dict[str, dict[str, float]] = {}
    for name, features in cases.items():
        loader = dh_tf.TableLoader(table, features, **options)
        dataset = dh_tf.dataset_from_loader(loader)
        results[name] = {}
        for consumer in ("TableLoader", "to_dataset"):
            times = []
            for _ in range(args.passes + 1):  # the first pass warms the JIT and the heap
                start = time.perf_counter()
                if consumer == "TableLoader":
                    rows = sum(len(next(iter(x.values())) if isinstance(x, dict) else x) for x in loader.iter_groups())
                else:
                    rows = int(dataset.reduce(0, lambda count, x: count + tf.shape(tf.nest.flatten(x)[0])[0]))
                times.append(time.perf_counter() - start)
            assert rows == args.rows, (rows, args.rows)
            results[name][consumer] = statistics.median(times[1:]) / rows * 1e9
            print(f"{name:28s} {consumer:12s} {rows:>9d} rows  {results[name][consumer]:8.1f} ns/row", flush=True)
    for consumer in ("TableLoader", "to_dataset"):
        base = results["float64 Price"][consumer]
        for name in cases:
            print(f"{consumer:12s} {name:28s} {results[name][consumer] / base:5.2f}x the float64 column")


if __name__ == "__main__":
    main()
