"""dh_tf's memory does not grow with the table: peak RSS and JVM heap at several sizes.

``python -m benchmarks.memory --rows 2000000,20000000 [--heap 1g] [--epochs 5] [--out benchmarks/results]``
writes memory.md and memory.json; ``python -m benchmarks.run --memory`` puts the same section in
results.md. Each size and loader runs in its own process (its own JVM with ``-Xmx{heap}``):
    ``dh_tf_shuffle_p2``: one shuffled epoch of ``dh_tf.to_dataset`` (prefetch 2, batch 4096), ``ds.reduce``;
    ``ep_dh_tf_cache``: ``--epochs`` epochs with ``cache=True`` (epoch 1 writes the cache, the others
    read it), ``ds.reduce``.
The JVM heap grows with the table up to ``-Xmx`` (decoded pages kept through soft references), so
the report also gives peak RSS minus the JVM heap peak: what Python and the loader hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.data import ensure_parquet
from benchmarks.loaders import Case, run_case

MEMORY_LOADER = "dh_tf_shuffle_p2"
CACHE_LOADER = "ep_dh_tf_cache"
BATCH_SIZE = 4096


def measure(
    sizes: list[int], heap: str, data_dir: Path, log_dir: Path, timeout_s: float, epochs: int = 5
) -> list[dict[str, Any]]:
    """Each loader at each table size in its own process (one pass each); one result dict per run."""
    results = []
    for loader, consumer, num_epochs in ((MEMORY_LOADER, "reduce", 1), (CACHE_LOADER, "epochs", epochs)):
        for rows in sizes:
            path = str(ensure_parquet(data_dir, rows))
            case = Case(loader, consumer, BATCH_SIZE, path, rows, 1, heap, num_epochs)
            print(f"memory: {loader}, {rows:,} rows ...", end=" ", flush=True)
            outcome = run_case(case, sys.executable, log_dir / f"memory.{loader}.{rows}.log", timeout_s)
            print(report.summary(outcome.result), flush=True)
            results.append(outcome.as_dict())
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring and ``--help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="2000000,20000000", help="comma-separated table sizes")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the cache run (default 5)")
    p.add_argument("--heap", default="1g", help="JVM -Xmx (default 1g)")
    p.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench").expanduser())
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per size before it is killed")
    p.add_argument("--allow-dirty", action="store_true", help="measure a tree with uncommitted changes (marked)")
    args = p.parse_args(argv)
    sizes = [int(part.replace("_", "")) for part in args.rows.split(",") if part]
    machine = report.machine_info()  # before the run: its load average is the machine's, not ours
    report.require_clean(machine, args.allow_dirty)
    results = measure(sizes, args.heap, args.data_dir, args.out / "logs", args.timeout, epochs=args.epochs)
    command = " ".join([Path(sys.executable).name, "-m", "benchmarks.memory", *(argv or sys.argv[1:])])
    report.write_memory(args.out, {"command": command, "machine": machine, "memory": results})
    print(f"report: {args.out / 'memory.md'}")


if __name__ == "__main__":
    main()
