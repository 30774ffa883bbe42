"""The main job (``python -m dh_tf demo``): train a Keras model on a Parquet table bigger than the heap.

Steps: start the embedded server with a small heap; generate (once, cached) a Parquet dataset
several times larger than the heap with a learnable target; filter and derive a column with DQL;
stream it through dh_tf into ``model.fit`` for a few epochs; evaluate on a held-out split made by a
DQL filter; print and write rows/s, peak memory and accuracy next to a trivial baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

NUM_FEATURES = 16
GENERATE_ROWS_PER_FILE = 1_000_000
SEED = 20261122
DATA_VERSION = 2
"""Bumped when generate() changes what it writes (the cache directory name carries it)."""


@dataclass
class DemoResult:
    rows_total: int
    rows_train: int
    rows_test: int
    parquet_mib: float
    heap: str
    epochs: int
    batch_size: int
    fit_seconds: float
    fit_rows_per_s: float
    read_rows_per_s: float
    test_accuracy: float
    baseline_accuracy: float
    peak_rss_mib: float
    heap_peak_mib: float
    heap_max_mib: float
    history: dict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows to generate (default 20M: ~1.5 GB)")
    parser.add_argument("--heap", default="512m", help="JVM -Xmx (default 512m, smaller than the data)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DH_TF_DATA", "~/.cache/dh_tf")).expanduser())
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where the report and PNG go")
    parser.add_argument("--port", type=int, default=10000, help="the embedded server's IDE port (loopback)")
    parser.add_argument("--no-cache", dest="cache", action="store_false",
                        help="read every epoch from the engine (default: the first epoch fills a decoded epoch cache)")


def run(args: argparse.Namespace) -> DemoResult:
    """Runs the demo end to end and writes ``report.json``, ``report.md`` and ``training_curve.png``."""
    from dh_tf.server import start_server

    print(f"dh_tf demo: starting the embedded Deephaven server with -Xmx{args.heap}")
    start_server(heap=args.heap, port=args.port)
    import keras
    from deephaven import parquet

    import dh_tf
    from dh_tf.diagnostics import memory_report, reset_heap_peak

    data = generate(args.data_dir / f"demo-v{DATA_VERSION}-{args.rows}", args.rows)
    parquet_mib = sum(f.stat().st_size for f in data.glob("*.parquet")) / 2**20
    # DQL, in the engine: drop outliers, derive an interaction column, split train/test by Id.
    table = parquet.read(str(data)).where("F15 > -3.0").update_view("F0xF1 = F0 * F1")
    features = [f"F{i}" for i in range(NUM_FEATURES)] + ["F0xF1"]
    train_table, test_table = table.where("Id % 10 != 0"), table.where("Id % 10 == 0")
    options = dict(batch_size=args.batch_size, prefetch=2, cache=args.cache)
    train = dh_tf.to_dataset(train_table, features, "Y", shuffle=True, seed=SEED, **options)
    test = dh_tf.to_dataset(test_table, features, "Y", **options)
    rows_train, rows_test = int(train_table.size), int(test_table.size)
    print(f"dh_tf demo: {int(table.size):,} rows after DQL filter ({parquet_mib:,.0f} MiB of Parquet, heap {args.heap}); "
          f"train {rows_train:,}, test {rows_test:,}")

    reset_heap_peak()
    start = time.perf_counter()
    read_rows = int(train.reduce(np.int64(0), lambda n, batch: n + keras.ops.cast(keras.ops.shape(batch[1])[0], "int64")))
    read_rows_per_s = read_rows / (time.perf_counter() - start)
    print(f"dh_tf demo: one read-only epoch into TF: {read_rows_per_s:,.0f} rows/s"
          + (" (it also fills the epoch cache)" if args.cache else ""))

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input((len(features),)),
        keras.layers.Normalization(mean=0.0, variance=1.0),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    # shuffle=False: dh_tf already shuffles each epoch; Keras cannot shuffle a tf.data.Dataset anyway.
    # SyncEpochs: Keras epoch e reads loader epoch e, although the read-only pass above used one.
    history = model.fit(train, epochs=args.epochs, validation_data=test, verbose=1, shuffle=False,
                        callbacks=[dh_tf.SyncEpochs(train)])
    fit_seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(test, verbose=0)
    positives = int(test_table.where("Y == 1").size)
    baseline = max(positives, rows_test - positives) / rows_test
    memory = memory_report()
    result = DemoResult(
        rows_total=args.rows, rows_train=rows_train, rows_test=rows_test, parquet_mib=round(parquet_mib, 1),
        heap=args.heap, epochs=args.epochs, batch_size=args.batch_size, fit_seconds=round(fit_seconds, 1),
        fit_rows_per_s=round(rows_train * args.epochs / fit_seconds), read_rows_per_s=round(read_rows_per_s),
        test_accuracy=round(float(test_accuracy), 4), baseline_accuracy=round(baseline, 4),
        peak_rss_mib=round(memory.peak_rss_mib), heap_peak_mib=round(memory.heap_peak_mib),
        heap_max_mib=round(memory.heap_max_mib),
        history={k: [round(float(v), 4) for v in vs] for k, vs in history.history.items()},
    )
    write_report(result, args.out)
    return result


def generate(directory: Path, rows: int) -> Path:
    """Writes the demo dataset once (one Parquet file per 1M rows); a marker file makes it reusable.

    Features F0..F15 are float32 N(0, 1); Y = 1 when a small linear score plus two wavy interactions
    (sin/cos of F0, F1 and of F2*F3) plus noise is positive: a constant cannot learn it, and a small
    model needs several epochs to (the training curve rises over the epochs, not in the first one).
    """
    import keras
    from deephaven import new_table, parquet
    from deephaven.column import float_col, int_col, long_col

    marker = directory / "COMPLETE"
    if marker.exists():
        print(f"dh_tf demo: using cached data in {directory}")
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    print(f"dh_tf demo: generating {rows:,} rows x {NUM_FEATURES} float32 features in {directory} (once)")
    rng = np.random.default_rng(SEED)
    weights = rng.normal(size=NUM_FEATURES).astype(np.float32)
    progress = keras.utils.Progbar(rows, unit_name="row")
    for index, start in enumerate(range(0, rows, GENERATE_ROWS_PER_FILE)):
        n = min(GENERATE_ROWS_PER_FILE, rows - start)
        x = rng.standard_normal((n, NUM_FEATURES), dtype=np.float32)
        score = (
            0.3 * (x @ weights)
            + 1.5 * np.sin(2.5 * x[:, 0]) * np.cos(2.5 * x[:, 1])
            + np.sin(2.0 * x[:, 2] * x[:, 3])
            + rng.normal(scale=0.3, size=n).astype(np.float32)
        )
        columns = [long_col("Id", np.arange(start, start + n, dtype=np.int64))]
        columns += [float_col(f"F{i}", x[:, i]) for i in range(NUM_FEATURES)]
        columns.append(int_col("Y", (score > 0).astype(np.int32)))
        parquet.write(new_table(columns), str(directory / f"part-{index:05d}.parquet"))
        progress.add(n)
    marker.write_text(json.dumps({"rows": rows, "seed": SEED}))
    return directory


def write_report(result: DemoResult, out: Path) -> None:
    """Prints the summary and writes report.json, report.md and training_curve.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# dh_tf demo report",
        "",
        "| figure | value |",
        "|---|---|",
        f"| data | {result.rows_total:,} rows, {result.parquet_mib:,.0f} MiB Parquet, JVM heap {result.heap} |",
        f"| train / test rows (DQL split) | {result.rows_train:,} / {result.rows_test:,} |",
        f"| read-only epoch into TF | {result.read_rows_per_s:,} rows/s |",
        f"| Keras fit ({result.epochs} epochs, batch {result.batch_size}) | {result.fit_seconds} s, "
        f"{result.fit_rows_per_s:,} rows/s |",
        f"| test accuracy | {result.test_accuracy:.4f} (baseline, majority class: {result.baseline_accuracy:.4f}) |",
        f"| peak RSS (Python + JVM) | {result.peak_rss_mib:,} MiB |",
        f"| JVM heap: sum of pool peaks (an upper bound) / max | {result.heap_peak_mib:,} / {result.heap_max_mib:,} MiB |",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(asdict(result), indent=2))
    print("\n".join(lines[2:]))
    try:
        _plot(result, out / "training_curve.png")
    except ImportError:
        print("dh_tf demo: matplotlib is not installed; no training_curve.png (pip install 'dh-tf[demo]')")
    print(f"dh_tf demo: report written to {out}/")


def _plot(result: DemoResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, result.epochs + 1)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        ax.plot(epochs, result.history[key], "o-", label=f"train {key}")
        ax.plot(epochs, result.history[f"val_{key}"], "s--", label=f"test {key}")
        ax.set_xlabel("epoch")
        ax.set_xticks(list(epochs))
        ax.legend()
    acc_ax.axhline(result.baseline_accuracy, color="grey", linestyle=":", label="baseline")
    acc_ax.legend()
    fig.suptitle(f"dh_tf demo: {result.rows_total:,} rows streamed from Parquet, heap {result.heap}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
