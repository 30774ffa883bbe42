"""Runs the whole benchmark in one go: ``python -m benchmarks.run [--rows N] [--only NAME,...] ...``.

Plans the cases (loader x consumer x batch size), writes the Parquet data once (cached), prepares the
peers' environments (``requirements.txt`` into this venv, petastorm's own venv), runs every case in its
own child process, one at a time, and rewrites the report after each case (``--out``): results.md,
results.json, rows_per_s.png. A case that fails is recorded with its error; the run goes on.

Which cases: every ``dataset`` loader with the ``reduce`` consumer at every batch size (Ray Data and
the single-feature variants only at batch sizes >= 1024); Keras ``fit`` for dh_tf and the in-memory
numpy baselines at large batch sizes (small ones too with ``--fit-small``); the multi-epoch loaders
(``ep_*``: ``--epochs`` epochs per pass with a new loader per pass, ``ds.reduce`` and, for some, Keras
``fit``) at large batch sizes; the limits once, on the big file. Batch sizes below ``SMALL_BATCH``
read the ``--small-rows`` file instead, for every loader (the same rows for all). Loaders with
``file="deephaven"`` read a copy of the data written by ``deephaven.parquet.write`` (cached next to it).

Then, unless ``--groups none``, the interleaved groups of :mod:`benchmarks.interleaved` (the pairs the
issue-14 targets compare, run A B A B ... in persistent processes; the targets table uses them), and,
unless ``--no-memory``, :mod:`benchmarks.memory`. With ``--only`` both are off unless asked for.

``--only`` takes loader names, globs, and ``@tag`` groups (``@epochs``, ``@threads``, ``@shuffle``,
``@jvm``, ``@filter``, ``@targets``: every case the report's target ratios need); ``--list`` shows the plan.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import interleaved, memory, report
from benchmarks.data import deephaven_parquet_path, ensure_deephaven_parquet, ensure_parquet, parquet_path
from benchmarks.loaders import LOADERS, MULTI_EPOCH_CONSUMERS, Case, Loader, Outcome, run_case

SMALL_BATCH = 1024
"""Batch sizes below this use the ``--small-rows`` file: per-batch Python costs make full passes too slow."""
HERE = Path(__file__).resolve().parent
PETASTORM_VENV = HERE / ".venv-petastorm"
MAIN_EXTRAS = {"dask": "dask", "ray_data": "ray"}
"""Loader -> the module it needs from ``requirements.txt`` (installed into this venv when missing)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000_000, help="rows of the big table (default 20M)")
    p.add_argument("--small-rows", type=int, default=2_000_000, help="rows for batch sizes < 1024 (default 2M)")
    p.add_argument("--heap", default="1g", help="JVM -Xmx of the Deephaven loaders (default 1g)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per case; the median is reported")
    p.add_argument("--batch-sizes", type=_int_list, default=[4096, 32], help="comma-separated (default 4096,32)")
    p.add_argument(
        "--only", type=lambda s: s.split(","), default=None, help="loader names, globs or @tags, comma-separated"
    )
    p.add_argument("--epochs", type=int, default=5, help="epochs per pass of the multi-epoch cases (default 5)")
    p.add_argument("--fit-small", action="store_true", help="also run Keras fit at batch sizes < 1024 (slow)")
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run benchmarks.memory (dh_tf memory vs table size); default: on unless --only is given",
    )
    p.add_argument("--memory-rows", type=_int_list, default=None, help="table sizes for --memory (default 2M,--rows)")
    p.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench").expanduser())
    p.add_argument("--out", type=Path, default=HERE / "results", help="report folder (default benchmarks/results)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per case before it is killed")
    p.add_argument("--no-install", action="store_true", help="install nothing; peers that are missing are skipped")
    p.add_argument("--list", action="store_true", help="print the planned cases and exit")
    p.add_argument("--allow-dirty", action="store_true", help="measure a tree with uncommitted changes (marked)")
    interleaved.add_arguments(p, standalone=False)
    args = p.parse_args(argv)
    if args.groups is None:  # the full run runs every interleaved group; a subset (--only) none unless asked
        args.groups = [] if args.only else list(interleaved.GROUPS)
    if args.memory is None:
        args.memory = not args.only
    if args.rows < 1 or args.small_rows < 1 or args.repeats < 1 or args.epochs < 1 or min(args.batch_sizes) < 1:
        p.error("--rows, --small-rows, --repeats, --epochs and --batch-sizes must be positive")
    if args.only:
        unknown = [n for n in args.only if not any(selected(loader, [n]) for loader in LOADERS.values())]
        if unknown:
            tags = sorted({f"@{tag}" for loader in LOADERS.values() for tag in loader.tags})
            p.error(f"--only: no loader matches {unknown}; loaders are {list(LOADERS)}; tags are {tags}")
    return args


def _int_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def selected(loader: Loader, only: list[str] | None) -> bool:
    """Whether ``--only`` (names, globs, or ``@tag``) keeps this loader."""
    return only is None or any(
        pattern[1:] in loader.tags if pattern.startswith("@") else fnmatch.fnmatchcase(loader.name, pattern)
        for pattern in only
    )


def plan(args: argparse.Namespace) -> list[Case]:
    """The cases to run, in order: per batch size the reduce, fit, then multi-epoch cases; limits last."""
    cases = []

    def add(loader: Loader, consumer: str, batch_size: int | None, rows: int) -> None:
        where = deephaven_parquet_path if loader.file == "deephaven" else parquet_path
        epochs = args.epochs if consumer in MULTI_EPOCH_CONSUMERS else 1
        cases.append(
            Case(
                loader.name,
                consumer,
                batch_size,
                str(where(args.data_dir, rows)),
                rows,
                args.repeats,
                args.heap,
                epochs,
            )
        )

    loaders = [loader for loader in LOADERS.values() if selected(loader, args.only)]
    for batch_size in args.batch_sizes:
        small = batch_size < SMALL_BATCH
        rows = min(args.small_rows, args.rows) if small else args.rows
        for loader in loaders:
            if loader.kind == "dataset" and batch_size >= loader.min_batch_size:
                add(loader, "reduce", batch_size, rows)
        for loader in loaders:
            if loader.kind in ("dataset", "arrays") and (loader.fit or loader.kind == "arrays"):
                if args.fit_small or not small:
                    add(loader, "fit", batch_size, rows)
        for loader in loaders:
            if loader.kind in ("epochs", "epochs_arrays") and batch_size >= loader.min_batch_size:
                if loader.kind == "epochs":
                    add(loader, "epochs", batch_size, rows)
                if loader.fit or loader.kind == "epochs_arrays":
                    add(loader, "fit_epochs", batch_size, rows)
    for loader in loaders:
        if loader.kind == "limit":
            add(loader, "read", None, args.rows)
    return cases


def install_main_extras(loaders: set[str], no_install: bool) -> dict[str, str]:
    """Installs ``requirements.txt`` into this venv if a planned loader's module is missing.

    Returns loader name -> why it is not available, for those still missing afterwards.
    """
    missing = {name: module for name, module in MAIN_EXTRAS.items() if name in loaders and not _importable(module)}
    if not missing:
        return {}
    reason = "not installed (--no-install)"
    if not no_install:
        print(f"setup: installing {HERE / 'requirements.txt'} for {sorted(missing)}", file=sys.stderr, flush=True)
        done = _pip(sys.executable, HERE / "requirements.txt")
        importlib.invalidate_caches()
        reason = f"pip install -r benchmarks/requirements.txt failed: {done}" if done else "still not importable"
    return {name: reason for name, module in missing.items() if not _importable(module)}


def petastorm_python(no_install: bool) -> str:
    """The petastorm venv's python, creating the venv first when missing or outdated.

    Raises:
        RuntimeError: creating the venv or installing into it failed (the message says why).
    """
    python = PETASTORM_VENV / "bin" / "python"
    stamp = PETASTORM_VENV / ".installed"
    wanted = (HERE / "requirements-petastorm.txt").read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    if no_install:
        raise RuntimeError(f"{PETASTORM_VENV} is not set up (--no-install)")
    print(f"setup: creating {PETASTORM_VENV} (a few minutes, once)", file=sys.stderr, flush=True)
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(PETASTORM_VENV)], capture_output=True, text=True
    )
    if made.returncode:
        raise RuntimeError(f"python -m venv failed: {(made.stderr or made.stdout)[-800:]}")
    failure = _pip(str(python), HERE / "requirements-petastorm.txt")
    if failure:
        raise RuntimeError(f"pip install -r benchmarks/requirements-petastorm.txt failed: {failure}")
    check = subprocess.run([str(python), "-c", "import petastorm.tf_utils"], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f"import petastorm.tf_utils failed: {check.stderr.strip().splitlines()[-1:]}")
    stamp.write_text(wanted)
    return str(python)


def _pip(python: str, requirements: Path) -> str:
    """Runs ``pip install -r``; returns '' on success, else the end of pip's output."""
    done = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()[-800:]


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def interpreters_for(venvs: set[str], no_install: bool) -> dict[str, str]:
    """venv name -> python for ``main`` and the wanted ``venvs``; ``{venv}_error`` says why one is missing."""
    pythons = {"main": sys.executable}
    if not no_install and not _importable("datasets"):  # the HuggingFace arms of the groups (requirements.txt)
        _pip(sys.executable, HERE / "requirements.txt")
    if "petastorm" in venvs:
        try:
            pythons["petastorm"] = petastorm_python(no_install)
        except RuntimeError as e:
            pythons["petastorm_error"] = str(e)
    return pythons


def interpreters(cases: list[Case], no_install: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(venv name -> python, loader name -> why it cannot run) for the planned cases."""
    names = {case.loader for case in cases}
    pythons, unavailable = {"main": sys.executable}, install_main_extras(names, no_install)
    if any(LOADERS[name].venv == "petastorm" for name in names):
        try:
            pythons["petastorm"] = petastorm_python(no_install)
        except RuntimeError as e:
            unavailable.update({name: str(e) for name in names if LOADERS[name].venv == "petastorm"})
    return pythons, unavailable


def describe(case: Case) -> str:
    """A short label for progress lines and log names."""
    batch = f"b{case.batch_size}" if case.batch_size else "nobatch"
    return f"{case.loader}.{case.consumer}.{batch}.{case.num_rows}"


def main(argv: list[str] | None = None) -> None:
    """Runs the planned cases and writes the report; see the module docstring."""
    args = parse_args(argv)
    cases = plan(args)
    if args.list or not (cases or args.groups):
        print("\n".join(describe(case) for case in cases) or "no case selected")
        for group in interleaved.plan_groups(args):
            arms = [f"{a['name']} ({p['key']})" for p in group["processes"] for a in p["arms"]]
            print(f"interleaved {group['name']}: {group['rows']:,} rows, batch {group['batch_size']}: {', '.join(arms)}")
        return
    machine = report.machine_info()  # before anything runs: the load average is the machine's
    report.require_clean(machine, args.allow_dirty)
    for rows in sorted({case.num_rows for case in cases}):
        ensure_parquet(args.data_dir, rows)
    pythons, unavailable = interpreters(cases, args.no_install)
    for rows in sorted({case.num_rows for case in cases if LOADERS[case.loader].file == "deephaven"}):
        try:
            ensure_deephaven_parquet(args.data_dir, rows)
        except RuntimeError as e:
            unavailable.update({c.loader: str(e) for c in cases if LOADERS[c.loader].file == "deephaven"})
    payload: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "loaders": {name: {"description": ldr.description, "note": ldr.note} for name, ldr in LOADERS.items()},
        "results": [],
    }
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {describe(case)} ...", end=" ", flush=True)
        if case.loader in unavailable:
            outcome = Outcome(case, {"status": "not available", "error": unavailable[case.loader]})
        else:
            python = pythons[LOADERS[case.loader].venv]
            outcome = run_case(case, python, args.out / "logs" / f"{describe(case)}.log", args.timeout)
        print(report.summary(outcome.result), flush=True)
        payload["results"].append(outcome.as_dict())
        report.write_results(args.out, payload)
    if args.groups:
        venvs = {p["venv"] for g in interleaved.plan_groups(args) for p in g["processes"]}
        payload["interleaved"] = interleaved.run_groups(args, interpreters_for(venvs, args.no_install), args.out)
        report.write_results(args.out, payload)
    if args.memory:
        sizes = args.memory_rows or sorted({min(2_000_000, args.rows), args.rows})
        payload["memory"] = memory.measure(
            sizes, args.heap, args.data_dir, args.out / "logs", args.timeout, epochs=args.epochs
        )
        report.write_results(args.out, payload)
    print(f"report: {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
