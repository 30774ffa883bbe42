"""predict_table vs model.predict on the same rows already in numpy: rows/s and their ratio.

``python -m benchmarks.predict [--rows 2000000] [--batch-size 4096] [--heap 1g] [--repeats 3]``

Uses the benchmark data (``benchmarks.data``: 16 float32 features, Parquet, cached) and a one-Dense-layer
model. ``model.predict`` scores the features already in one numpy array (the rows read beforehand,
not timed); ``predict_table`` reads them from the Parquet-backed table and returns the predictions as an
in-heap table (``keep=None``), then also with ``keep=["Label"]`` and with ``path=`` (Parquet pages).
Each figure is the median of ``--repeats`` passes after one warm-up pass (the Parquet pages then sit
in the heap, as with any warm table). Target: predict_table >= 0.8x model.predict.

A second reference, ``predict_on_batch (numpy)``, calls ``model.predict_on_batch`` on each
``--batch-size`` slice of the same numpy array (what predict_table does per group, NOTE [ Scoring a
group with predict_on_batch ] in ``dh_tf/predict.py``): the compute ceiling, without reading or
building a table. All cases run side by side in one process, so the ratios hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data import FEATURES, ensure_parquet


def _median_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring and ``--help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000, help="rows scored (default 2M)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--heap", default="1g", help="JVM -Xmx (default 1g)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per case; the median is reported")
    p.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench").expanduser())
    args = p.parse_args(argv)

    path = ensure_parquet(args.data_dir, args.rows)
    from dh_tf.server import start_server

    start_server(heap=args.heap, port=0)
    import keras
    import numpy as np
    from deephaven import parquet
    from deephaven.numpy import to_numpy

    from dh_tf.write.predict_table import predict_table

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((len(FEATURES),)), keras.layers.Dense(1)])
    table = parquet.read(str(path))
    x = to_numpy(table, FEATURES).astype(np.float32)
    out_dir = Path(tempfile.mkdtemp(prefix="dh_tf_predict_bench_"))
    try:
        cases = {
            "model.predict (numpy)": lambda: model.predict(x, batch_size=args.batch_size, verbose=0),
            "predict_on_batch (numpy)": lambda: np.concatenate(
                [model.predict_on_batch(x[i : i + args.batch_size]) for i in range(0, len(x), args.batch_size)]
            ),
            "predict_table": lambda: predict_table(model, table, FEATURES, batch_size=args.batch_size),
            "predict_table keep=Label": lambda: predict_table(
                model, table, FEATURES, keep=["Label"], batch_size=args.batch_size
            ),
            "predict_table path=": lambda: predict_table(
                model, table, FEATURES, batch_size=args.batch_size, directory=out_dir / "scores", overwrite=True
            ),
        }
        seconds = {name: _median_seconds(run, args.repeats) for name, run in cases.items()}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    baseline = args.rows / seconds["model.predict (numpy)"]
    results = []
    for name, s in seconds.items():
        rate = args.rows / s
        results.append({"case": name, "seconds": round(s, 3), "rows_per_s": round(rate), "ratio": round(rate / baseline, 2)})
        print(f"{name:28s} {s:7.2f} s  {rate / 1e6:6.2f} M rows/s  {rate / baseline:5.2f}x", flush=True)
    print(json.dumps({"rows": args.rows, "batch_size": args.batch_size, "results": results}))


if __name__ == "__main__":
    main()
