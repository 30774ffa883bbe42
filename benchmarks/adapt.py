"""``dh_tf.adapt`` (engine aggregations) vs Keras' own ``layer.adapt(ds)`` on the same dh_tf dataset.

Standalone: starts its own embedded server (``-Xmx`` from ``--heap``, default 1g: smaller than the
data at 20M rows). Two tables, both Parquet files read by ``deephaven.parquet.read``:

* the benchmark table of :mod:`benchmarks.data` (``--rows`` x 16 float32 ``F0..F15``, cached in
  ``--data-dir``): ``Normalization`` over the 16 columns;
* a String column ``Sym`` of the same number of rows (``--symbols`` distinct values, symbol ``k``
  about ``1 / (k + 1)`` as frequent as symbol 0; written once by pyarrow next to the benchmark
  table, row groups of 1M rows): ``StringLookup``.

Four arms, interleaved in one process: round 1 runs each once (cold: JIT, page cache; reported
apart), then ``--passes`` warm rounds run ``adapt Normalization``, ``Normalization.adapt(ds)``,
``adapt StringLookup``, ``StringLookup.adapt(ds)`` in that order, so a slow phase of the host lands
on both sides of a comparison. Each pass adapts a new layer; ``ds`` is one ``dh_tf.to_dataset`` per
table (batch ``--batch-size``, default reader threads), each pass a new epoch of it. The two layers
of round 1 are compared (means / variances within tolerance, vocabularies equal) and the result is
recorded. The target (issue 15): ``dh_tf.adapt`` >= 10x faster than ``layer.adapt(ds)`` at 20M rows
with ``-Xmx1g``, compared best vs best (the ratio of medians beside it).

Writes ``adapt.md`` and ``adapt.json`` to ``--out`` (the command, the commit and whether the tree
was dirty, the machine and its load average before and after).

    .venv/bin/python -m benchmarks.adapt --out benchmarks/results             # full size: 20M rows
    .venv/bin/python -m benchmarks.adapt --rows 300000 --out /tmp/adapt_smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.data import FEATURES, ROW_GROUP_ROWS, ensure_parquet
from benchmarks.report import _machine_section, machine_info, table

SYM_SEED = 15
TARGET = 10.0
COMPARISONS = {  # engine arm -> the Keras arm it is compared with
    "dh_tf.adapt(Normalization)": "Normalization.adapt(ds)",
    "dh_tf.adapt(StringLookup)": "StringLookup.adapt(ds)",
}


def sym_parquet_path(data_dir: Path, num_rows: int, num_symbols: int) -> Path:
    """Where the cached String-column file of ``num_rows`` rows and ``num_symbols`` symbols lives."""
    return Path(data_dir).expanduser() / f"bench_{num_rows}_rows_sym{num_symbols}.parquet"


def ensure_sym_parquet(data_dir: Path, num_rows: int, num_symbols: int) -> Path:
    """Returns the cached file with one String column ``Sym``, writing it first if missing.

    Symbol ``k`` (``SYM<k>``) is drawn with probability ``log((k + 2) / (k + 1)) / log(S + 1)``
    (``floor((S + 1) ** U - 1)``, ``U`` uniform: Zipf-like). Each 1M-row block has its own seeded
    RNG; written to a temporary name and renamed when complete.
    """
    path = sym_parquet_path(data_dir, num_rows, num_symbols)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    symbols = pa.array([f"SYM{k}" for k in range(num_symbols)], type=pa.string())
    schema = pa.schema([("Sym", pa.string())])
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, num_rows, ROW_GROUP_ROWS):
            rng = np.random.default_rng([SYM_SEED, start // ROW_GROUP_ROWS])
            size = min(ROW_GROUP_ROWS, num_rows - start)
            codes = np.floor((num_symbols + 1.0) ** rng.random(size) - 1).astype(np.int32)
            column = symbols.take(pa.array(np.minimum(codes, num_symbols - 1)))
            writer.write_table(pa.Table.from_arrays([column], schema=schema), row_group_size=ROW_GROUP_ROWS)
            print(f"data: wrote {start + size:,} / {num_rows:,} rows to {path.name}", file=sys.stderr, flush=True)
    partial.rename(path)
    return path


def build_arms(numbers: Any, syms: Any, batch_size: int) -> dict[str, Callable[[], Any]]:
    """The four arms: each call adapts a new layer and returns it."""
    import keras

    import dh_tf

    number_ds = dh_tf.to_dataset(numbers, FEATURES, batch_size=batch_size)
    sym_ds = dh_tf.to_dataset(syms, "Sym", batch_size=batch_size)

    def keras_adapt(layer: Any, ds: Any) -> Any:
        layer.adapt(ds)
        return layer

    return {
        "dh_tf.adapt(Normalization)": lambda: dh_tf.adapt(keras.layers.Normalization(), numbers, FEATURES),
        "Normalization.adapt(ds)": lambda: keras_adapt(keras.layers.Normalization(), number_ds),
        "dh_tf.adapt(StringLookup)": lambda: dh_tf.adapt(keras.layers.StringLookup(), syms, "Sym"),
        "StringLookup.adapt(ds)": lambda: keras_adapt(keras.layers.StringLookup(), sym_ds),
    }


def agreement(layers: dict[str, Any]) -> dict[str, Any]:
    """How far the engine-adapted layers are from Keras' own (round 1's layers)."""
    engine, own = layers["dh_tf.adapt(Normalization)"], layers["Normalization.adapt(ds)"]
    mean_a, mean_b = np.ravel(engine.mean), np.ravel(own.mean)
    var_a, var_b = np.ravel(engine.variance), np.ravel(own.variance)
    vocab_a = layers["dh_tf.adapt(StringLookup)"].get_vocabulary()
    vocab_b = layers["StringLookup.adapt(ds)"].get_vocabulary()
    return {
        "normalization_max_abs_mean_diff": float(np.max(np.abs(mean_a - mean_b))),
        "normalization_max_rel_variance_diff": float(np.max(np.abs(var_a - var_b) / np.maximum(var_b, 1e-12))),
        "normalization_close": bool(np.allclose(mean_a, mean_b, atol=1e-4) and np.allclose(var_a, var_b, rtol=1e-3)),
        "vocabulary_size": len(vocab_a),
        "vocabularies_equal": [str(v) for v in vocab_a] == [str(v) for v in vocab_b],
    }


def run_rounds(arms: dict[str, Callable[[], Any]], passes: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Round 1 (cold) then ``passes`` warm rounds, every arm once per round in order."""
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    first_layers: dict[str, Any] = {}
    for round_index in range(1 + passes):
        for name, arm in arms.items():
            start = time.perf_counter()
            layer = arm()
            seconds[name].append(time.perf_counter() - start)
            if round_index == 0:
                first_layers[name] = layer
            label = "cold" if round_index == 0 else f"pass {round_index}"
            print(f"{label:7s} {name:28s} {seconds[name][-1]:9.3f} s", flush=True)
    results = {}
    for name, times in seconds.items():
        warm = times[1:]
        results[name] = {"cold_s": times[0], "warm_s": warm, "min_s": min(warm), "median_s": statistics.median(warm),
                         "max_s": max(warm)}
    return results, agreement(first_layers)


def ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per comparison: how many times faster the engine arm is, best vs best and median vs median."""
    rows = []
    for engine, own in COMPARISONS.items():
        best = results[own]["min_s"] / results[engine]["min_s"]
        rows.append({"engine": engine, "keras": own, "best_ratio": best,
                     "median_ratio": results[own]["median_s"] / results[engine]["median_s"],
                     "target": TARGET, "pass": best >= TARGET})
    return rows


def markdown(payload: dict[str, Any]) -> str:
    """The report: target ratios, every arm's seconds, the agreement check, the machine."""
    config = payload["config"]
    lines = [
        "# dh_tf.adapt vs layer.adapt(ds)",
        "",
        f"{config['rows']:,} rows (16 float32 columns; one String column of {config['symbols']:,} symbols), "
        f"`-Xmx{config['heap']}`, batch {config['batch_size']}, {config['passes']} warm passes per arm, "
        "interleaved in one process (round 1 cold, apart).",
        "",
        "## Target (issue 15): dh_tf.adapt >= 10x faster than layer.adapt(ds)",
        "",
        table(("engine", "Keras on the dh_tf dataset", "best vs best", "median vs median", "target"),
              [(r["engine"], r["keras"], f"{r['best_ratio']:.1f}x", f"{r['median_ratio']:.1f}x",
                "PASS" if r["pass"] else "MISS") for r in payload["ratios"]]),
        "",
        "## Seconds per adapt",
        "",
        table(("arm", "cold", "min", "median", "max", "warm passes"),
              [(name, f"{r['cold_s']:.3f}", f"{r['min_s']:.3f}", f"{r['median_s']:.3f}", f"{r['max_s']:.3f}",
                ", ".join(f"{s:.3f}" for s in r["warm_s"])) for name, r in payload["results"].items()]),
        "",
        "## Same state",
        "",
        table(("check", "value"), [(k, str(v)) for k, v in payload["agreement"].items()]),
        "",
        f"Load average after the run: {' / '.join(map(str, payload['load_avg_after']))}",
        "",
        _machine_section({"machine": payload["machine"], "command": payload["command"]}),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=3, help="warm passes per arm (after one cold round)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench"))
    parser.add_argument("--out", type=Path, required=True, help="directory for adapt.md and adapt.json")
    args = parser.parse_args(argv)
    if args.passes < 3:
        parser.error(f"--passes must be at least 3 (got {args.passes})")

    machine = machine_info()  # the load average before anything starts
    number_path = ensure_parquet(args.data_dir, args.rows)
    sym_path = ensure_sym_parquet(args.data_dir, args.rows, args.symbols)
    with socket.socket() as probe:  # a free loopback port for the embedded server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from dh_tf.server import start_server

    start_server(heap=args.heap, port=port)
    from deephaven import parquet

    numbers = parquet.read(str(number_path)).view(FEATURES)
    syms = parquet.read(str(sym_path))
    assert numbers.size == syms.size == args.rows, (numbers.size, syms.size, args.rows)
    results, agreed = run_rounds(build_arms(numbers, syms, args.batch_size), args.passes)
    with open("/proc/loadavg") as f:
        load_after = [float(v) for v in f.read().split()[:3]]
    payload = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.adapt", *(argv or sys.argv[1:])]),
        "config": {"rows": args.rows, "symbols": args.symbols, "passes": args.passes,
                   "batch_size": args.batch_size, "heap": args.heap},
        "machine": machine,
        "results": results,
        "ratios": ratios(results),
        "agreement": agreed,
        "load_avg_after": load_after,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adapt.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "adapt.md").write_text(markdown(payload))
    for r in payload["ratios"]:
        print(f"{r['engine']} vs {r['keras']}: {r['best_ratio']:.1f}x best vs best, "
              f"{r['median_ratio']:.1f}x median vs median (target {TARGET:.0f}x: {'PASS' if r['pass'] else 'MISS'})")
    print(f"agreement: {agreed}")
    print(f"wrote {args.out / 'adapt.md'} and {args.out / 'adapt.json'}")


if __name__ == "__main__":
    main()
