"""Interleaved comparisons: the cases a claim compares run alternately, A B A B ..., on one machine state.

``python -m benchmarks.interleaved [--groups cached,shuffle,...] [--passes 5] [--rows N] [--out DIR]``
writes interleaved.md and interleaved.json into ``--out``; ``python -m benchmarks.run`` (``make bench``)
runs the same groups after its per-case cases and puts them into results.md (targets table included).

A *group* is the arms one claim compares (the issue's targets). Each process of a group is a
persistent child (:mod:`benchmarks.arms`) holding some of its arms: arms that can share a process
(dh_tf and the in-memory baselines, one JVM) share one; Petastorm (its own venv) and each JVM option
set (its own JVM) get their own. The parent builds the processes one after the other (cache-filling
epochs run then, timed as ``fill_s``), then runs ``1 + --passes`` rounds; each round asks every arm of
the group for one pass, in group order, one at a time: a process waits idle (blocked on stdin) while
another runs. Round 1 is the cold pass, reported apart; the other passes give min / median / max and
the best (the capability: the host's slow modes only ever slow a pass down).

Groups (``--groups``; all by default). The first three (issue 24) use the consumer that sums every
feature and label (``read_reduce``, arms ``*_read``) unless named otherwise:
    ``ceiling``: dh_tf cached epochs vs the in-memory ceiling (``from_tensor_slices`` over a ``[n/b, b, 16]``
        view, tf.data's rewrites on and off: the faster is the ceiling), the old range-sliced arm, and the
        peers' later epochs: pyarrow ``read_table`` -> ``from_tensor_slices``, tf.data ``.cache()`` in
        memory and ``Dataset.save``/``load``, HuggingFace ``to_tf_dataset``, pyarrow ``iter_batches`` ->
        ``from_generator``, Petastorm with and without its cache; count-only rows for dh_tf and the ceiling.
    ``epoch1_peers``: epoch 1 with a new loader per pass, its build inside the timing (the JVM start and
        ``parquet.read`` before it): dh_tf, pyarrow ``iter_batches``, ``read_table``, ``.cache()``'s filling
        epoch, HuggingFace (``from_parquet``'s conversion included), Petastorm.
    ``shuffle_peers``: shuffled cached epochs vs an in-memory full-permutation gather, tf.data
        ``shuffle(buffer)``, HuggingFace ``shuffle=True``, Petastorm's shuffled row groups (and rows) with
        and without a shuffling buffer; every arm with its shuffle quality (:mod:`benchmarks.quality`).
    ``cached``: dh_tf ``cache=True`` epochs 2+ (unshuffled) vs the in-memory range-sliced ceiling vs
        tf.data ``Dataset.cache(filename)`` after dh_tf.
    ``shuffle``: shuffled vs unshuffled cached epochs, with a consumer that only counts rows and with one
        that sums every feature and label (``read_reduce``: it reads each byte, as training does).
    ``fit``: ``--epochs``-epoch Keras ``fit`` with the cache (a new dataset per pass: epoch 1 reads the
        engine) vs in-memory numpy ``fit`` (``shuffle=False`` and ``shuffle=True``); same model, batch,
        epochs; time per fit.
    ``batch32``: batch 32 on ``--small-rows`` rows: dh_tf (engine, and cached) vs in-memory tf.data.
    ``epoch1``: dh_tf epoch 1 (a new dataset per pass) vs the raw engine read, same reader threads.
    ``petastorm``: dh_tf cached epochs (one process) vs Petastorm (another, its venv): a new reader per
        epoch, with and without its local-disk cache, and one reader with ``num_epochs=E``.
    ``jvm``: dh_tf epoch 1 under JVM option sets, one process (JVM) each: default (G1), ``-Xms``=``-Xmx``,
        ParallelGC, both; every Deephaven process logs GC (``-Xlog:gc``), summarized per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.arms import PREFIX
from benchmarks.data import ensure_parquet, parquet_path
from benchmarks.loaders import REPO, _kill_tree

GROUPS = ("ceiling", "epoch1_peers", "shuffle_peers", "cached", "shuffle", "fit", "batch32", "epoch1", "petastorm",
          "jvm")
JVM_OPTION_SETS = {
    "default": (),
    "xms": ("-Xms{heap}",),
    "parallel": ("-XX:-UseG1GC", "-XX:+UseParallelGC"),
    "parallel_xms": ("-XX:-UseG1GC", "-XX:+UseParallelGC", "-Xms{heap}"),
}
"""JVM flags added to ``start_server``'s defaults (deephaven-server's vmoptions file selects G1)."""
DH = {"deephaven": True, "packages": ("deephaven-core", "dh-tf")}


def _arm(name: str, kind: str, builder: str = "", fill: bool = False, quality: bool = False,
         **options: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "builder": builder, "fill": fill, "quality": quality, "options": options}


def _petastorm(*arms: dict[str, Any]) -> dict[str, Any]:
    return {"key": "petastorm", "venv": "petastorm", "packages": ("petastorm",), "arms": list(arms)}


def _new_groups(args: argparse.Namespace) -> dict[str, tuple[int, int, list[dict[str, Any]]]]:
    """The issue-24 groups: the ceiling and the peers, epoch 1 against the peers, shuffles at stated quality."""
    big = args.rows
    cache_read = _arm("dh_tf_cache_read", "read_reduce", "dh_tf", fill=True, cache=True)
    ceiling = [
        cache_read,
        _arm("ceiling_read", "read_reduce", "ceiling"),
        _arm("ceiling_norewrite_read", "read_reduce", "ceiling_norewrite"),
        _arm("numpy_range_read", "read_reduce", "numpy_range"),
        _arm("pyarrow_table_read", "read_reduce", "pyarrow_read_table"),
        _arm("tfdata_memcache_read", "read_reduce", "tfdata_memory_cache", fill=True),
        _arm("tfdata_saveload_read", "read_reduce", "tfdata_save_load"),
        _arm("hf_read", "read_reduce", "hf"),
        _arm("pyarrow_iter_read", "read_reduce", "pyarrow_iter_batches"),
        _arm("dh_tf_cache", "reduce", "dh_tf", fill=True, cache=True),
        _arm("ceiling", "reduce", "ceiling"),
        _arm("ceiling_norewrite", "reduce", "ceiling_norewrite"),
    ]
    epoch1 = [_arm(f"{name}_epoch1", "epoch1", builder) for name, builder in (
        ("dh_tf", "dh_tf"), ("pyarrow_iter", "pyarrow_iter_batches"), ("pyarrow_table", "pyarrow_read_table"),
        ("tfdata_memcache", "tfdata_memory_cache"), ("hf", "hf"))]
    shuffled = [
        _arm("dh_tf_cache_shuffle_read", "read_reduce", "dh_tf", fill=True, quality=True, cache=True, shuffle=True),
        _arm("dh_tf_cache_read", "read_reduce", "dh_tf", fill=True, quality=True, cache=True),
        _arm("gather_perm_read", "read_reduce", "gather_permutation", quality=True),
        _arm("tfdata_shuffle_read", "read_reduce", "tfdata_shuffle", quality=True),
        _arm("hf_shuffle_read", "read_reduce", "hf_shuffle", quality=True),
    ]
    from benchmarks.peers import SHUFFLE_BUFFER_ROWS

    return {
        "ceiling": (big, 4096, [dict(DH, key="main", arms=ceiling), _petastorm(
            _arm("petastorm_read", "petastorm", num_epochs=1, read=True),
            _arm("petastorm_cache_read", "petastorm", num_epochs=1, cache=True, read=True))]),
        "epoch1_peers": (big, 4096, [dict(DH, key="main", arms=epoch1), _petastorm(
            _arm("petastorm_epoch1_read", "petastorm", num_epochs=1, read=True))]),
        "shuffle_peers": (big, 4096, [dict(DH, key="main", arms=shuffled), _petastorm(
            _arm("petastorm_shuffle_cache_read", "petastorm", quality=True, num_epochs=1, cache=True, read=True,
                 shuffle=True),
            _arm("petastorm_shuffle_queue_cache_read", "petastorm", quality=True, num_epochs=1, cache=True,
                 read=True, shuffle=True, shuffle_buffer=SHUFFLE_BUFFER_ROWS))]),
    }


def page_cache_state(path: Path) -> str:
    """What the page cache holds of the data file during the warm rounds, from its size against RAM."""
    with open("/proc/meminfo") as f:
        ram = next(int(line.split()[1]) for line in f if line.startswith("MemTotal")) * 1024
    size = path.stat().st_size if path.exists() else 0
    if size < ram // 2:
        return (f"warm: the file ({size / 1e9:.2f} GB) fits in the page cache ({ram / 2**30:.1f} GiB RAM); the "
                "builds and the cold round read it first")
    return f"not warm: the file ({size / 1e9:.2f} GB) is not small against RAM ({ram / 2**30:.1f} GiB)"


def plan_groups(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The groups to run: each ``{"name", "rows", "batch_size", "processes": [{..., "arms": [...]}]}``."""
    big, small = args.rows, min(args.small_rows, args.rows)
    cached = _arm("dh_tf_cache", "reduce", "dh_tf", fill=True, cache=True)
    groups = {
        "cached": (big, 4096, [dict(DH, key="main", arms=[
            cached, _arm("numpy_range", "reduce", "numpy_range"), _arm("dh_tf_tfcache", "reduce", "dh_tf_tfcache",
                                                                       fill=True)])]),
        "shuffle": (big, 4096, [dict(DH, key="main", arms=[
            cached, _arm("dh_tf_cache_shuffle", "reduce", "dh_tf", fill=True, cache=True, shuffle=True),
            _arm("dh_tf_cache_read", "read_reduce", "dh_tf", fill=True, cache=True),
            _arm("dh_tf_cache_shuffle_read", "read_reduce", "dh_tf", fill=True, cache=True, shuffle=True)])]),
        "fit": (big, 4096, [dict(DH, key="main", arms=[
            _arm("dh_tf_cache_fit", "fit", "dh_tf", cache=True), _arm("numpy_fit", "fit", "numpy"),
            _arm("numpy_fit_shuffle", "fit", "numpy", shuffle=True)])]),
        "batch32": (small, 32, [dict(DH, key="main", arms=[
            _arm("dh_tf", "reduce", "dh_tf"), cached, _arm("numpy_range", "reduce", "numpy_range"),
            _arm("numpy_slices", "reduce", "numpy_slices")])]),
        "epoch1": (big, 4096, [dict(DH, key="main", arms=[
            _arm("dh_tf_epoch1", "fresh_reduce", "dh_tf"), _arm("engine_read", "engine_read")])]),
        "petastorm": (big, 4096, [
            dict(DH, key="dh_tf", arms=[cached]),
            {"key": "petastorm", "venv": "petastorm", "packages": ("petastorm",), "arms": [
                _arm("petastorm", "petastorm", num_epochs=1),
                _arm("petastorm_cache", "petastorm", num_epochs=1, cache=True),
                _arm("petastorm_epochs", "petastorm", num_epochs=args.epochs),
                _arm("petastorm_epochs_cache", "petastorm", num_epochs=args.epochs, cache=True)]}]),
        "jvm": (big, 4096, [
            dict(DH, key=f"jvm_{label}", jvm_args=[flag.format(heap=args.heap) for flag in flags],
                 arms=[_arm(f"jvm_{label}", "fresh_reduce", "dh_tf")])
            for label, flags in JVM_OPTION_SETS.items()]),
        **_new_groups(args),
    }
    planned = []
    for name in args.groups:
        rows, batch, processes = groups[name]
        path = str(parquet_path(args.data_dir, rows))
        for process in processes:
            process.setdefault("venv", "main")
            process.update(heap=args.heap, gc_log=None)
            process["arms"] = [dict(arm, path=path, rows=rows, batch_size=batch, epochs=args.epochs)
                               for arm in process["arms"]]
        planned.append({"name": name, "rows": rows, "batch_size": batch, "processes": processes})
    return planned


@dataclass
class Child:
    """One persistent arms process: its pipes, and the protocol lines it printed, queued."""

    key: str
    popen: subprocess.Popen
    log: Any
    lines: queue.Queue = field(default_factory=queue.Queue)

    def pump(self) -> None:
        """Reader thread: protocol lines to the queue, anything else to the log."""
        for line in self.popen.stdout:  # type: ignore[union-attr]
            if line.startswith(PREFIX):
                self.lines.put(line[len(PREFIX):].rstrip("\n"))
            else:
                self.log.write(line)
        self.lines.put(None)

    def expect(self, kind: str, timeout_s: float) -> dict[str, Any]:
        """The next ``kind`` line's JSON. Raises RuntimeError when the child dies or times out."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"{self.key}: no {kind} after {timeout_s:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.key}: the process exited (status {self.popen.wait()}) before {kind}")
        got, _, payload = line.partition(" ")
        if got != kind:
            raise RuntimeError(f"{self.key}: expected {kind}, got {got}")
        return json.loads(payload)

    def send(self, command: str) -> None:
        self.popen.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.popen.stdin.flush()  # type: ignore[union-attr]


def start_child(process: dict[str, Any], python: str, log_path: Path) -> Child:
    """Starts ``python -m benchmarks.arms PROCESS_JSON``; its stderr and chatter go to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # closed by stop_child
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen([python, "-m", "benchmarks.arms", json.dumps(process)], cwd=REPO, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    child = Child(process["key"], popen, log)
    threading.Thread(target=child.pump, name=f"pump-{child.key}", daemon=True).start()
    return child


def stop_child(child: Child, timeout_s: float = 120) -> dict[str, Any]:
    """Asks the child to close its arms and exit; kills it (and its descendants) if it does not."""
    final: dict[str, Any] = {}
    try:
        if child.popen.poll() is None:
            child.send("quit")
            final = child.expect("FINAL", timeout_s)
            child.popen.wait(timeout=timeout_s)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        final["stop_error"] = str(e)
    finally:
        if child.popen.poll() is None:
            _kill_tree(child.popen.pid)
            child.popen.wait()
        child.log.close()
    return final


def summarize(rows: int, passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Cold (first) pass apart; min / median / max / best of the others, in seconds and rows/s."""
    ok = [p for p in passes if "seconds" in p]
    figures: dict[str, Any] = {"passes": passes}
    if not ok:
        return figures
    cold, warm = ok[0], ok[1:]
    timed_rows = cold.get("timed_rows", rows)
    figures["cold_s"] = cold["seconds"]
    figures["cold_rows_per_s"] = timed_rows / cold["seconds"]
    if warm:
        seconds = sorted(p["seconds"] for p in warm)
        figures.update(
            warm_passes=len(seconds),
            min_s=seconds[0],
            median_s=statistics.median(seconds),
            max_s=seconds[-1],
            best_rows_per_s=timed_rows / seconds[0],
            median_rows_per_s=timed_rows / statistics.median(seconds),
            worst_rows_per_s=timed_rows / seconds[-1],
        )
    gc = [p["gc_pause_ms"] for p in warm if "gc_pause_ms" in p]
    if gc:
        figures.update(gc_pause_ms_median=statistics.median(gc), gc_pause_ms_max=max(gc),
                       cold_gc_pause_ms=cold.get("gc_pause_ms"))
    return figures


def run_group(group: dict[str, Any], pythons: dict[str, str], log_dir: Path, passes: int,
              timeout_s: float) -> dict[str, Any]:
    """Runs one group (see the module docstring); never raises: failures are recorded per arm."""
    name, started = group["name"], time.perf_counter()
    children: dict[str, Child] = {}
    arms: dict[str, dict[str, Any]] = {}
    order: list[tuple[str, str]] = []  # (process key, arm name), the order of every round
    try:
        for process in group["processes"]:
            key = process["key"]
            for arm in process["arms"]:
                arms[arm["name"]] = {"process": key, "kind": arm["kind"], "options": arm["options"], "passes": []}
                order.append((key, arm["name"]))
            if process["venv"] not in pythons:
                for arm in process["arms"]:
                    arms[arm["name"]]["error"] = pythons.get(f"{process['venv']}_error", "no interpreter")
                continue
            if process.get("deephaven"):
                process = dict(process, gc_log=str((log_dir / f"gc.{name}.{key}.log").resolve()))
            print(f"interleaved {name}: starting {key} ({len(process['arms'])} arm(s)) ...", flush=True)
            child = start_child(process, pythons[process["venv"]], log_dir / f"interleaved.{name}.{key}.log")
            children[key] = child
            try:
                ready = child.expect("READY", timeout_s)
            except RuntimeError as e:
                ready = {"failed": {arm["name"]: str(e) for arm in process["arms"]}}
            for arm in process["arms"]:
                entry = arms[arm["name"]]
                entry.update(ready.get("arms", {}).get(arm["name"], {}))
                entry["versions"] = ready.get("versions")
                if arm["name"] in ready.get("failed", {}):
                    entry["error"] = ready["failed"][arm["name"]]
            if "default_reader_threads" in ready:
                group["default_reader_threads"] = ready["default_reader_threads"]
        for round_index in range(1 + passes):
            for key, arm_name in order:
                entry = arms[arm_name]
                if "error" in entry:
                    continue
                try:
                    children[key].send(f"pass {arm_name}")
                    result = children[key].expect("RESULT", timeout_s)
                except (RuntimeError, OSError) as e:  # the process timed out or died: none of its arms go on
                    result = {"error": str(e)}
                    for other in arms.values():
                        if other["process"] == key:
                            other.setdefault("error", f"pass {round_index + 1} of {arm_name}: {e}")
                entry["passes"].append(result)
                if "error" in result:
                    entry["error"] = f"pass {round_index + 1}: {result['error']}"
                print(f"interleaved {name} round {round_index + 1}: {arm_name} {_short(result)}", flush=True)
    finally:
        for key, child in children.items():
            final = stop_child(child)
            for arm_name, info in final.pop("arms", {}).items():
                arms[arm_name].update({k: v for k, v in info.items() if k not in arms[arm_name]})
            for entry in arms.values():
                if entry["process"] == key:
                    entry["process_final"] = final
    for entry in arms.values():
        entry.update(summarize(group["rows"], entry.pop("passes")))
    return {**{k: v for k, v in group.items() if k != "processes"},
            "processes": [{k: v for k, v in p.items() if k != "arms"} for p in group["processes"]],
            "arms": arms, "order": [arm for _, arm in order], "wall_s": round(time.perf_counter() - started, 1)}


def _short(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error'][:300]}"
    gc = f", GC pauses {result['gc_pause_ms']:.0f} ms" if "gc_pause_ms" in result else ""
    return f"{result['seconds']:.3f} s{gc}"


def run_groups(args: argparse.Namespace, pythons: dict[str, str], out: Path) -> list[dict[str, Any]]:
    """Writes the data files the groups need, then runs every planned group, one after the other."""
    groups = plan_groups(args)
    for rows in sorted({g["rows"] for g in groups}):
        ensure_parquet(args.data_dir, rows)
    for g in groups:
        g["page_cache"] = page_cache_state(parquet_path(args.data_dir, g["rows"]))
    return [run_group(g, pythons, out / "logs", args.passes, args.timeout) for g in groups]


def add_arguments(p: argparse.ArgumentParser, standalone: bool) -> None:
    """The options of the interleaved groups (shared with ``benchmarks.run``)."""
    p.add_argument("--groups", type=_groups, default=list(GROUPS) if standalone else None,
                   help=f"interleaved groups, comma-separated: {','.join(GROUPS)}, all or none"
                        + (" (default all)" if standalone else " (default: all, none with --only)"))
    p.add_argument("--passes", type=int, default=5, help="warm passes per arm after the cold one (default 5)")


def _groups(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    if names == ["all"]:
        return list(GROUPS)
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown group(s) {unknown}; groups are {list(GROUPS)}, all, none")
    return names


def main(argv: list[str] | None = None) -> None:
    """Standalone: runs the groups and writes interleaved.md / interleaved.json into ``--out``."""
    from benchmarks import interleaved_report, report
    from benchmarks.run import interpreters_for

    p = argparse.ArgumentParser(prog="python -m benchmarks.interleaved", description=__doc__.split("\n\n")[0])
    add_arguments(p, standalone=True)
    p.add_argument("--rows", type=int, default=20_000_000)
    p.add_argument("--small-rows", type=int, default=2_000_000)
    p.add_argument("--heap", default="1g")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--data-dir", type=Path, default=Path("~/.cache/dh_tf_bench").expanduser())
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per build or pass before giving up")
    p.add_argument("--no-install", action="store_true")
    p.add_argument("--allow-dirty", action="store_true", help="measure a tree with uncommitted changes (marked)")
    args = p.parse_args(argv)
    payload: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.interleaved", *(argv or sys.argv[1:])]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": report.machine_info(),  # before the run: the load average is the machine's
    }
    report.require_clean(payload["machine"], args.allow_dirty)
    pythons = interpreters_for({p["venv"] for g in plan_groups(args) for p in g["processes"]}, args.no_install)
    payload["interleaved"] = run_groups(args, pythons, args.out)
    interleaved_report.write(args.out, payload)
    print(f"report: {args.out / 'interleaved.md'}")


if __name__ == "__main__":
    main()
