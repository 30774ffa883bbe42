"""Where a shuffled cached epoch's time goes, against an unshuffled one (issue 14's shuffle target).

One process, one JVM, the suite's Parquet table (20M rows x 16 float32 + int32, ``-Xmx1g``, batch
4096, default pages of 32 MiB). Two loaders with ``cache=True`` (one shuffled, seed 1), each filled
by one epoch, then, passes interleaved (A B A B ...):

- ``iter_groups``: one cached epoch of ``TableLoader.iter_groups()`` (no TensorFlow): dh_tf's own
  work per epoch, on its reader threads;
- ``to_dataset``: one cached epoch of ``to_dataset`` consumed by ``ds.reduce`` (counting rows).

Then the parts of one shuffled page, timed one page at a time on one thread: the seeded permutation
(``page_permutation``), the rows' table positions in delivery order (``page_positions``, which
includes the permutation) and the row gather from the cache file (``EpochCache.gather``); and the
same gathers on 1 and 2 threads at once (wall time per page).

    .venv/bin/python -m benchmarks.shuffle_costs --out benchmarks/results/third-wave
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data import FEATURES, LABEL, ensure_parquet
from benchmarks.report import machine_info, provenance, write_named_results


def _timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _spread(seconds: list[float], scale: float = 1.0, unit: str = "s") -> str:
    """``min / median / max`` of some timings, times ``scale``."""
    return " / ".join(f"{scale * s:.3f}" for s in (min(seconds), statistics.median(seconds), max(seconds))) + f" {unit}"


def _gather_all(cache: Any, plans: list[Any]) -> None:
    from dh_tf.reading.plan import page_positions

    for plan in plans:
        cache.gather(page_positions(plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--pages", type=int, default=20, help="pages timed part by part")
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench").expanduser())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/third-wave"))
    args = parser.parse_args()
    machine = machine_info()
    path = ensure_parquet(args.data_dir, args.rows)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from dh_tf.server import start_server

    with socket.socket() as probe:  # a free loopback port for the server's IDE
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_server(heap=args.heap, port=port)
    import tensorflow as tf
    from deephaven import parquet

    import dh_tf
    from dh_tf.reading.plan import page_permutation, page_positions

    table = parquet.read(str(path))
    count = lambda n, batch: n + tf.cast(tf.shape(batch[1])[0], tf.int64)  # noqa: E731
    datasets = {shuffle: dh_tf.to_dataset(table, list(FEATURES), LABEL, batch_size=4096, cache=True, shuffle=shuffle,
                                          seed=1) for shuffle in (False, True)}
    fill = {shuffle: _timed(lambda d=d: d.reduce(tf.constant(0, tf.int64), count)) for shuffle, d in datasets.items()}
    times: dict[str, list[float]] = {}
    for _ in range(args.passes):
        for shuffle, dataset in datasets.items():
            name = "shuffled" if shuffle else "unshuffled"
            loader = dataset.dh_tf_loader
            times.setdefault(f"{name} iter_groups", []).append(
                _timed(lambda loader=loader: sum(len(labels) for _, labels in loader.iter_groups())))
            times.setdefault(f"{name} to_dataset", []).append(
                _timed(lambda dataset=dataset: dataset.reduce(tf.constant(0, tf.int64), count)))

    loader = datasets[True].dh_tf_loader
    cache = loader._cache  # the loader's own EpochCache: the parts of its cached read, one at a time
    plans = list(loader.plan.pages(args.rows, 1, skip_rows=0))[: args.pages]
    parts: dict[str, list[float]] = {"permutation": [], "positions": [], "gather": []}
    for plan in plans:
        start = time.perf_counter()
        page_permutation(plan)
        permuted = time.perf_counter()
        positions = page_positions(plan)
        placed = time.perf_counter()
        cache.gather(positions)
        parts["permutation"].append(permuted - start)
        parts["positions"].append(placed - permuted)
        parts["gather"].append(time.perf_counter() - placed)
    threaded: dict[int, float] = {}
    for threads in (1, 2):
        workers = [threading.Thread(target=_gather_all, args=(cache, plans[i::threads])) for i in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        threaded[threads] = (time.perf_counter() - start) / len(plans)
    for dataset in datasets.values():
        dataset.dh_tf_loader.close()

    lines = [
        "# Shuffled cached epochs: where the time goes",
        "",
        provenance(f"python -m benchmarks.shuffle_costs --out {args.out}", machine),
        "",
        f"{args.rows:,} rows x 16 float32 + int32 (Parquet, `-Xmx{args.heap}`), batch 4096, "
        f"{len(list(datasets[True].dh_tf_loader.plan.pages(args.rows, 1, skip_rows=0)))} pages of "
        f"{plans[0].num_rows:,} rows ({len(plans[0].spans)} spans each when shuffled); cache filled in "
        f"{fill[False]:.2f} s (unshuffled) / {fill[True]:.2f} s (shuffled). {args.passes} interleaved passes each:",
        "",
        "| cached epoch | min / median / max |",
        "|---|---|",
        *(f"| {name} | {_spread(seconds)} |" for name, seconds in times.items()),
        "",
        f"The parts of one shuffled page, {len(plans)} pages, one thread (min / median / max):",
        "",
        "| part | per page |",
        "|---|---|",
        *(f"| {name} | {_spread(seconds, 1e3, 'ms')} |" for name, seconds in parts.items()),
        *(f"| gather with positions, {n} thread(s) at once: wall time / pages | {1e3 * s:.1f} ms |"
          for n, s in threaded.items()),
    ]
    data = {"fill_s": fill, "epochs_s": times, "parts_s": parts, "threaded_wall_per_page_s": threaded}
    write_named_results(args.out, "shuffle_costs", lines, machine, args, data)


if __name__ == "__main__":
    main()
