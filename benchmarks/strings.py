"""A String column vs a float64 column, read through dh_tf.TableLoader and to_dataset (engine path).

Standalone: starts its own embedded server. Builds, in the heap, a table of ``--rows`` rows with a
String column ``Sym`` (``--symbols`` distinct values with skewed frequencies, about 1% nulls filled
with ``"[UNK]"``) and a float64 column ``Price``; then times full passes over ``Price`` alone, ``Sym``
alone, and both (one reader thread, no prefetch): the TableLoader's numpy pages, and ``to_dataset``
consumed in graph mode (``ds.reduce``: ``tf.string`` tensors made from the ``str`` objects), and
the integer-code fast path (``SymCode``: the rank in ``dh_tf.vocabulary``, joined in DQL). Cases
alternate round by round; writes strings.md / strings.json (ns per row, min / median / max, and the
ratio to the float64 column). The target (issue 15) is a String column <= 3x a float64 column per
row in the read path.

    .venv/bin/python -m benchmarks.strings --out benchmarks/results/third-wave
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.report import machine_info, provenance, write_named_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/third-wave"))
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
    # The fast path for a categorical: integer codes joined in the engine (rank in the vocabulary, 0 = null/unseen).
    vocabulary = dh_tf.vocabulary(table, "Sym")
    from deephaven import new_table
    from deephaven.column import int_col, string_col

    lookup = new_table([string_col("Sym", vocabulary), int_col("SymCode", list(range(1, len(vocabulary) + 1)))])
    table = table.natural_join(lookup, on="Sym", joins="SymCode")
    cases = {"float64 Price": "Price", "String Sym": "Sym", "String Sym + float64 Price": {"s": "Sym", "p": "Price"},
             "int32 SymCode (codes)": "SymCode"}
    options = dict(batch_size=4096, page_rows=262_144, reader_threads=1, prefetch=0, read_path="engine",
                   nulls={"Sym": "[UNK]", "SymCode": 0})
    consumers = ("TableLoader", "to_dataset")
    arms = {}
    for name, features in cases.items():
        dtype = "int32" if name.startswith("int32") else "float64"
        loader = dh_tf.TableLoader(table, features, **options, dtype=dtype)
        arms[name] = (loader, dh_tf.dataset_from_loader(loader))
    ns: dict[str, dict[str, list[float]]] = {name: {c: [] for c in consumers} for name in cases}
    machine = machine_info()
    for round_ in range(args.passes + 1):  # round 0 warms the JIT and the heap; not reported
        for consumer in consumers:
            for name, (loader, dataset) in arms.items():  # interleaved: every case once per round
                start = time.perf_counter()
                if consumer == "TableLoader":
                    rows = sum(len(next(iter(x.values())) if isinstance(x, dict) else x) for x in loader.iter_groups())
                else:
                    rows = int(dataset.reduce(0, lambda count, x: count + tf.shape(tf.nest.flatten(x)[0])[0]))
                assert rows == args.rows, (rows, args.rows)
                if round_:
                    ns[name][consumer].append((time.perf_counter() - start) / rows * 1e9)
    lines = [
        "# A String column vs a float64 column in the read path", "",
        provenance(f"python -m benchmarks.strings --rows {args.rows} --symbols {args.symbols} --passes {args.passes}", machine), "",
        f"{args.rows:,} in-heap rows, {args.symbols} skewed symbols (about 1% null, filled with `[UNK]`), one reader "
        "thread, no prefetch, batch 4096; ns per row over the warm passes (cases interleaved, round by round); the "
        "ratio is to the float64 column with the same consumer (best / median). `int32 SymCode` is the integer-code "
        "fast path: the rank in `dh_tf.vocabulary`, joined in the engine (`natural_join`).", "",
        "| case | consumer | min ns/row | median | max | vs float64 (best) | vs float64 (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for consumer in consumers:
        base = ns["float64 Price"][consumer]
        for name in cases:
            values = ns[name][consumer]
            lines.append(f"| {name} | {consumer} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} "
                         f"| {min(values) / min(base):.2f}x | {statistics.median(values) / statistics.median(base):.2f}x |")
    write_named_results(args.out, "strings", lines, machine, args, {"ns_per_row": ns})


if __name__ == "__main__":
    main()
