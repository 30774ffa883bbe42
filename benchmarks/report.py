"""The report: results.md (markdown tables), results.json (everything), rows_per_s.png (bar chart),
epochs.png (per-epoch rows/s of the multi-epoch cases, and threads vs rows/s).

Takes the payload :mod:`benchmarks.run` builds: ``command``, ``config``, ``machine``, ``loaders``
(name -> description, note), ``results`` (one flat dict per case: the Case fields, ``status``, and
when ok ``rows_per_s``, ``first_pass_rows_per_s``, ``seconds``, ``peak_rss_mib``, ...; multi-epoch
cases also ``epoch_seconds``, ``epoch1_rows_per_s``, ``later_rows_per_s``, ``per_epoch_rows_per_s``),
and optionally ``memory`` (results of :mod:`benchmarks.memory`). The targets of issue 7 are ratios of
cases of the same run, computed in :func:`targets`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.data import ROW_BYTES

PACKAGES = ("dh-tf", "deephaven-core", "deephaven-server", "tensorflow-cpu", "keras", "numpy", "pyarrow", "dask", "ray")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, date and the main venv's package versions."""
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    with open("/proc/meminfo") as f:
        mem_kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        from dh_tf.reading.loader import default_reader_threads

        reader_threads: int | None = default_reader_threads()
    except ImportError:  # the report is also written where dh_tf is not installed
        reader_threads = None
    with open("/proc/loadavg") as f:
        load = [float(v) for v in f.read().split()[:3]]
    return {
        **git_state(),
        "load_avg_before": load,
        "cpu": models[0] if models else cpu,
        "cores": os.cpu_count(),
        "default_reader_threads": reader_threads,
        "ram_gib": round(mem_kib / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions,
    }


def git_state() -> dict[str, Any]:
    """The commit measured (``git rev-parse HEAD``) and whether the work tree differs from it (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True)
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""  # porcelain lines start with a space

    commit = git("rev-parse", "HEAD").strip()
    # Untracked files count (a new module under dh_tf/ changes what runs); results folders do not.
    changed = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results").splitlines() if commit else []
    return {"git_commit": commit or "unknown (not a git checkout)", "git_dirty": bool(changed),
            "git_changed_files": [line[3:] for line in changed][:50]}


def require_clean(machine: dict[str, Any], allow_dirty: bool) -> None:
    """Refuses to measure a work tree that differs from its commit, unless ``allow_dirty`` (then marked loudly).

    Raises:
        SystemExit: when the tree is dirty and ``allow_dirty`` is false; the message names the changed files.
    """
    if machine.get("git_dirty") and not allow_dirty:
        files = ", ".join(machine.get("git_changed_files", []))
        raise SystemExit(f"the work tree differs from {machine.get('git_commit')} ({files}): commit first, or pass "
                         "--allow-dirty for a smoke run (its results are marked DIRTY TREE)")


def provenance(command: str, machine: dict[str, Any]) -> str:
    """The line a results file opens with: the command, the commit measured, the machine, the load and the date."""
    dirty = " **DIRTY TREE: plus uncommitted changes**" if machine.get("git_dirty") else ""
    return (f"Command: `{command}`; commit `{machine.get('git_commit')}`{dirty}; {machine['cpu']}, {machine['cores']} "
            f"cores; load before {machine['load_avg_before']}; {machine['date']}.")


def write_named_results(out: Path, name: str, lines: list[str], machine: dict[str, Any], args: Any, data: dict[str, Any]) -> None:
    """Writes ``out/name.md`` (``lines``) and ``out/name.json`` (machine, arguments and ``data``), and prints the lines."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    payload = {"machine": machine, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **data}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    print("\n".join(lines))


def rate(value: float | None) -> str:
    """Rows/s in millions: ``5.23 M``."""
    return "—" if value is None else f"{value / 1e6:.2f} M"


def summary(result: dict[str, Any]) -> str:
    """One line about a case's result, for the console."""
    if result.get("status") != "ok":
        return f"{result.get('status')}: {str(result.get('error'))[:300]}"
    heap = f", JVM heap peak {result['jvm_heap_peak_mib']:.0f} MiB" if "jvm_heap_peak_mib" in result else ""
    if "epoch1_rows_per_s" in result:
        return (
            f"epoch 1 {rate(result['epoch1_rows_per_s'])} rows/s, epochs 2+ {rate(result.get('later_rows_per_s'))}, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB{heap}"
        )
    return (
        f"{rate(result['rows_per_s'])} rows/s (first pass {rate(result['first_pass_rows_per_s'])}), "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB{heap}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(result: dict[str, Any], key: str) -> str:
    return f"{result[key]:.0f}" if result.get(key) is not None else "—"


def _machine_section(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    dirty = m.get("git_dirty")
    rows = [
        ("commit", f"`{m.get('git_commit', 'not recorded')}`"
         + (f" **DIRTY TREE: plus uncommitted changes** to {', '.join(m.get('git_changed_files', []))}"
            if dirty else ", clean tree")),
        ("load average before the run", " / ".join(map(str, m.get("load_avg_before", []))) or "not recorded"),
        ("CPU", f"{m['cpu']}, {m['cores']} cores"),
        ("RAM", f"{m['ram_gib']} GiB"),
        ("OS / Python", f"{m['os']} / Python {m['python']}"),
        ("date", m["date"]),
        ("versions (main venv)", ", ".join(f"{k} {v}" for k, v in m["versions"].items())),
    ]
    petastorm = [
        r["versions"] for r in payload.get("results", []) if r.get("loader") == "petastorm" and "versions" in r
    ]
    petastorm += [
        a["versions"] for g in payload.get("interleaved") or [] for a in g["arms"].values()
        if a.get("process") == "petastorm" and a.get("versions")
    ]
    if petastorm:
        rows.append(("versions (petastorm venv)", ", ".join(f"{k} {v}" for k, v in petastorm[0].items())))
    return "## Machine\n\n" + table(("", ""), rows) + f"\n\nCommand: `{payload['command']}`\n"


def _pick(results: list[dict[str, Any]], loader: str, consumer: str, batch_size: int | None) -> dict[str, Any] | None:
    return next(
        (r for r in results if (r["loader"], r["consumer"], r["batch_size"]) == (loader, consumer, batch_size)), None
    )


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "—"
    if result.get("status") != "ok":
        return str(result.get("status"))
    return f"{rate(result['rows_per_s'])} ({rate(result['first_pass_rows_per_s'])})"


def _reduce_section(payload: dict[str, Any]) -> str:
    results = [r for r in payload["results"] if r["consumer"] == "reduce"]
    if not results:
        return ""
    batches = sorted({r["batch_size"] for r in results}, reverse=True)
    loaders = list(dict.fromkeys(r["loader"] for r in results))
    headers = ["loader", "what", *[f"batch {b} ({_rows(results, b):,} rows)" for b in batches], "note"]
    body = [
        [
            f"`{name}`",
            payload["loaders"][name]["description"],
            *[_cell(_pick(results, name, "reduce", b)) for b in batches],
            payload["loaders"][name]["note"],
        ]
        for name in loaders
    ]
    return (
        "## Rows/s into TensorFlow (`ds.reduce` in graph mode)\n\n"
        f"Median of {payload['config']['repeats']} pass(es) (first pass in parentheses); every batch counted and "
        "the row total checked against the table. Deephaven loaders run with "
        f"`-Xmx{payload['config']['heap']}`: when the table is bigger than the heap, every pass decodes the "
        "Parquet file again (cold).\n\n" + table(headers, body) + "\n"
    )


def _fit_section(payload: dict[str, Any]) -> str:
    results = [r for r in payload["results"] if r["consumer"] == "fit"]
    if not results:
        return ""
    body = []
    for r in results:
        if r.get("status") != "ok":
            body.append([f"`{r['loader']}`", r["batch_size"], f"{r['num_rows']:,}", r["status"], "", "", "", ""])
            continue
        seconds = statistics.median(r["seconds"])
        baseline = _pick(
            results, "numpy_fit_shuffle" if "shuffle" in r["loader"] else "numpy_fit", "fit", r["batch_size"]
        )
        ratio = (
            f"{seconds / statistics.median(baseline['seconds']):.2f}x"
            if baseline and baseline.get("status") == "ok"
            else "—"
        )
        last = r.get("last_pass", {})
        body.append(
            [
                f"`{r['loader']}`",
                r["batch_size"],
                f"{r['num_rows']:,}",
                f"{seconds:.2f}",
                f"{r['seconds'][0]:.2f}",
                rate(r["rows_per_s"]),
                ratio,
                f"{last.get('loss', '—')} / {last.get('accuracy', '—')}",
            ]
        )
    headers = [
        "loader",
        "batch",
        "rows",
        "s/epoch (median)",
        "first epoch s",
        "rows/s",
        "time vs numpy fit",
        "loss / accuracy",
    ]
    return (
        "## Keras `fit`, one epoch per pass (Dense 32 relu -> Dense 1 sigmoid, Adam)\n\n"
        "`time vs numpy fit`: this loader's epoch time over in-memory `model.fit(x, y, batch_size=b)` with the "
        "same shuffle setting (dh_tf shuffle on vs `shuffle=True`).\n\n" + table(headers, body) + "\n"
    )


def _limits_section(payload: dict[str, Any]) -> str:
    results = [r for r in payload["results"] if r["consumer"] == "read"]
    if not results:
        return ""
    body = [
        [
            f"`{r['loader']}`",
            payload["loaders"][r["loader"]]["description"],
            f"{r['num_rows']:,}",
            _cell(r),
            f"{r['rows_per_s'] * ROW_BYTES / 1e9:.2f}" if r.get("status") == "ok" else "—",
        ]
        for r in results
    ]
    return (
        "## Limits (no TensorFlow)\n\n"
        + table(["limit", "what", "rows", "rows/s (first pass)", "GB/s decoded"], body)
        + "\n"
    )


def _batches(result: dict[str, Any]) -> str:
    """Batches one reduce pass delivered, and how many there are when only the last is partial."""
    batches = result.get("last_pass", {}).get("batches")
    if batches is None:
        return "—"
    return f"{batches} ({math.ceil(result.get('delivered_rows', result['num_rows']) / result['batch_size'])})"


def _all_cases_section(payload: dict[str, Any]) -> str:
    body = [
        [
            f"`{r['loader']}`",
            r["consumer"],
            r["batch_size"] or "—",
            f"{r['num_rows']:,}",
            r.get("status"),
            _cell(r),
            _mib(r, "peak_rss_mib"),
            _mib(r, "rss_before_passes_mib"),
            _mib(r, "jvm_heap_peak_mib"),
            _batches(r),
            r.get("wall_s", "—"),
        ]
        for r in payload["results"]
    ]
    headers = [
        "loader",
        "consumer",
        "batch",
        "rows",
        "status",
        "rows/s (first pass)",
        "peak RSS MiB",
        "RSS before passes MiB",
        "JVM heap peak MiB",
        "batches (min possible)",
        "wall s",
    ]
    section = "## All cases\n\n" + table(headers, body) + "\n"
    problems = [r for r in payload["results"] if r.get("status") != "ok"]
    if problems:
        section += (
            "\n### Not available or failed\n\n"
            + "\n".join(
                f"- `{r['loader']}` ({r['consumer']}, batch {r['batch_size']}): **{r.get('status')}**: "
                f"{str(r.get('error') or '').strip().splitlines()[0][:500] if r.get('error') else ''}"
                for r in problems
            )
            + "\n"
        )
    return section


def _rss_minus_heap(result: dict[str, Any]) -> float | None:
    """Peak RSS minus the JVM heap peak, in MiB: what the process holds besides the Java heap."""
    if result.get("status") != "ok" or result.get("jvm_heap_peak_mib") is None:
        return None
    return float(result["peak_rss_mib"] - result["jvm_heap_peak_mib"])


def memory_markdown(results: list[dict[str, Any]]) -> str:
    """The memory-vs-table-size section: one row per loader and size, and RSS minus heap per loader."""
    body = [
        [
            f"`{r['loader']}`" + (f" ({r['epochs']} epochs)" if r.get("epochs", 1) > 1 else ""),
            f"{r['num_rows']:,}",
            f"{r['num_rows'] * ROW_BYTES / 1e9:.2f}",
            r.get("status"),
            _mib(r, "rss_before_passes_mib"),
            _mib(r, "peak_rss_mib"),
            _mib(r, "jvm_heap_peak_mib"),
            _mib(r, "jvm_heap_max_mib"),
            "—" if _rss_minus_heap(r) is None else f"{_rss_minus_heap(r):.0f}",
            _cell(r),
        ]
        for r in results
    ]
    headers = [
        "loader",
        "rows",
        "decoded GB",
        "status",
        "RSS before epoch MiB",
        "peak RSS MiB",
        "JVM heap peak MiB",
        "JVM heap max MiB",
        "peak RSS - JVM heap peak MiB",
        "rows/s",
    ]
    growth = []
    for loader in dict.fromkeys(r["loader"] for r in results):
        runs = sorted((r for r in results if r["loader"] == loader), key=lambda r: r["num_rows"])
        small, big = _rss_minus_heap(runs[0]), _rss_minus_heap(runs[-1])
        if len(runs) > 1 and small and big is not None:
            growth.append(
                f"- `{loader}`: peak RSS - heap at {runs[-1]['num_rows']:,} rows is {big / small:.2f}x "
                f"that at {runs[0]['num_rows']:,} rows ({big:.0f} vs {small:.0f} MiB)."
            )
    batch = results[0]["batch_size"] if results else ""
    return (
        f"## Memory vs table size (batch {batch})\n\n"
        "Each loader and size in its own process; peak RSS covers Python and the embedded JVM. The JVM heap "
        "grows with the table up to `-Xmx` (decoded pages kept through soft references), so peak RSS minus the "
        "JVM heap peak is what the loader and Python hold.\n\n"
        + table(headers, body)
        + "\n"
        + ("\n" + "\n".join(growth) + "\n" if growth else "")
    )


NOTES = """## How to read this

- Each case runs in its own process: peak RSS (`ru_maxrss`) is that loader's alone, and includes the
  embedded JVM for the Deephaven loaders. For Ray it is the driver only (Ray's workers are other
  processes). In-memory loaders hold the whole table, and their RSS shows it.
- rows/s = table rows / median pass time. The first pass includes tracing and cold caches.
- Batch sizes below 1024 use the smaller table for every loader, so those rates compare the same rows.
- On a 2-core machine the reader and TensorFlow compete for the same cores; numbers are noisy.
"""


def _interleaved_section(payload: dict[str, Any]) -> str:
    if not payload.get("interleaved"):
        return ""
    from benchmarks import interleaved_report

    return interleaved_report.groups_section(payload)


def results_markdown(payload: dict[str, Any]) -> str:
    """The whole results.md."""
    parts = [
        "# dh_tf benchmarks\n",
        _machine_section(payload),
        _targets_section(payload),
        _interleaved_section(payload),
        _reduce_section(payload),
        _fit_section(payload),
        _epochs_section(payload),
        _threads_section(payload),
        _shuffle_section(payload),
        _jvm_section(payload),
        _filter_section(payload),
        _limits_section(payload),
    ]
    if payload.get("memory"):
        parts.append(memory_markdown(payload["memory"]))
    parts += [_all_cases_section(payload), NOTES]
    return "\n".join(part for part in parts if part)


# ---------------------------------------------------------------------------------------------
# Multi-epoch, threads, shuffle, JVM flag, filters, and the targets (issue 7)


def _ok(results: list[dict[str, Any]], loader: str, consumer: str, batch_size: int | None = None) -> dict | None:
    """The ok result of ``loader`` x ``consumer`` at ``batch_size`` (default: its largest batch), or None."""
    found = [
        r
        for r in results
        if r["loader"] == loader
        and r["consumer"] == consumer
        and r.get("status") == "ok"
        and (batch_size is None or r["batch_size"] == batch_size)
    ]
    return max(found, key=lambda r: r["batch_size"] or 0) if found else None


def _value(result: dict[str, Any] | None, key: str) -> float | None:
    return None if result is None else result.get(key)


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}x"


def _epochs_section(payload: dict[str, Any]) -> str:
    results = [r for r in payload["results"] if r["consumer"] in ("epochs", "fit_epochs")]
    if not results:
        return ""
    body = []
    for r in results:
        name = f"`{r['loader']}`"
        if r.get("status") != "ok":
            body.append([name, r["consumer"], r["batch_size"], f"{r['num_rows']:,}", r.get("status"), "", "", "", ""])
            continue
        last = r.get("last_pass", {})
        body.append(
            [
                name,
                "Keras fit" if r["consumer"] == "fit_epochs" else "ds.reduce",
                r["batch_size"],
                f"{r['num_rows']:,}",
                rate(r["epoch1_rows_per_s"]),
                rate(r.get("later_rows_per_s")),
                ", ".join(f"{v / 1e6:.2f}" for v in r["per_epoch_rows_per_s"]),
                f"{r['peak_rss_mib']:.0f}",
                f"{last['loss']} / {last['accuracy']}" if "loss" in last else "—",
            ]
        )
    headers = [
        "loader",
        "consumer",
        "batch",
        "rows",
        "epoch 1 rows/s",
        f"epochs 2-{results[0].get('epochs', '')} rows/s (median)",
        "per epoch, M rows/s",
        "peak RSS MiB",
        "loss / accuracy",
    ]
    described = "\n".join(
        f"- `{name}`: {payload['loaders'][name]['description']}" for name in dict.fromkeys(r["loader"] for r in results)
    )
    return (
        f"## Multi-epoch runs ({results[0].get('epochs', '')} epochs per pass)\n\n"
        "Each pass builds a new dataset (a new loader: a new, empty cache) and runs every epoch over it; "
        "epoch 1 reads the file (and fills the cache where there is one), later epochs read the cache. Epoch 1: "
        f"median over {payload['config']['repeats']} pass(es); epochs 2+: median of every later epoch of every pass; "
        "per epoch: the median over passes of each epoch. Keras fit: the benchmark model, a new seeded model per "
        "pass, epoch times from a callback.\n\n" + table(headers, body) + "\n\n" + described + "\n"
    )


def _threads_section(payload: dict[str, Any]) -> str:
    results = payload["results"]
    lines = [
        ("engine read limit (no TF)", "limit_engine_read_t{}", "read", "rows_per_s"),
        ("dh_tf epoch 1, no cache", "ep_dh_tf_t{}", "epochs", "epoch1_rows_per_s"),
        ("dh_tf epochs 2+, no cache", "ep_dh_tf_t{}", "epochs", "later_rows_per_s"),
        ("dh_tf epoch 1 with cache (fills it)", "ep_dh_tf_cache_t{}", "epochs", "epoch1_rows_per_s"),
        ("dh_tf epochs 2+ from the cache", "ep_dh_tf_cache_t{}", "epochs", "later_rows_per_s"),
    ]
    body = []
    for label, pattern, consumer, key in lines:
        one = _value(_ok(results, pattern.format(1), consumer), key)
        two = _value(_ok(results, pattern.format(2), consumer), key)
        default_name = pattern.replace("_t{}", "").format()
        default = _value(_ok(results, default_name, consumer), key)
        if one is None and two is None:
            continue
        body.append([label, rate(one), rate(two), rate(default), _ratio(two, one)])
    if not body:
        return ""
    m = payload["machine"]
    return (
        "## Threads vs rows/s\n\n"
        f"This machine has **{m['cores']} cores**, shared by the reader threads, the JVM's own threads and "
        f"TensorFlow: more than 2 reader threads cannot help here (the default `reader_threads` here is "
        f"{m.get('default_reader_threads', '?')}: one per core, at most 8). On a bigger machine the line goes on.\n\n"
        + table(["", "1 thread", "2 threads", "default threads", "2 / 1"], body)
        + "\n"
    )


def _shuffle_section(payload: dict[str, Any]) -> str:
    results = payload["results"]
    base = _value(_ok(results, "dh_tf_p2", "reduce"), "rows_per_s")
    body = []
    for r in results:
        if r["consumer"] == "reduce" and (
            r["loader"].startswith("dh_tf_shuffle_b") or r["loader"] == "dh_tf_shuffle_p2"
        ):
            if r.get("status") == "ok" and r["batch_size"] == _largest_batch(results, r["loader"]):
                body.append(
                    [
                        "engine (every pass decodes)",
                        f"`{r['loader']}`",
                        rate(base),
                        rate(r["rows_per_s"]),
                        _ratio(r["rows_per_s"], base),
                        _verdict(r["rows_per_s"], base, 0.9),
                    ]
                )
    plain, shuffled = _ok(results, "ep_dh_tf_cache", "epochs"), _ok(results, "ep_dh_tf_cache_shuffle", "epochs")
    for label, key in (
        ("cache, epoch 1 (engine + cache write)", "epoch1_rows_per_s"),
        ("cache, epochs 2+", "later_rows_per_s"),
    ):
        a, b = _value(shuffled, key), _value(plain, key)
        if a is not None or b is not None:
            body.append([label, "`ep_dh_tf_cache_shuffle`", rate(b), rate(a), _ratio(a, b), _verdict(a, b, 0.9)])
    if not body:
        return ""
    return (
        "## Shuffle vs no shuffle\n\n"
        "Engine: shuffled `ds.reduce` passes at each `shuffle_block_rows` against `dh_tf_p2` (no shuffle), same "
        "threads and prefetch; cache: `ep_dh_tf_cache_shuffle` against `ep_dh_tf_cache`. Target: >= 0.9x.\n\n"
        + table(["read from", "case", "no shuffle rows/s", "shuffle rows/s", "ratio", ">= 0.9x"], body)
        + "\n"
    )


def _largest_batch(results: list[dict[str, Any]], loader: str) -> int | None:
    return max((r["batch_size"] or 0 for r in results if r["loader"] == loader), default=None)


def _verdict(value: float | None, base: float | None, goal: float, higher: bool = True) -> str:
    if value is None or not base:
        return "not measured"
    ratio = value / base
    return "PASS" if (ratio >= goal if higher else ratio <= goal) else "MISS"


def _jvm_section(payload: dict[str, Any]) -> str:
    results = payload["results"]
    pairs = [
        # start_server sets the flag by default: "without" puts the JVM default (1000) back.
        ("pyarrow-written (dictionary, snappy)", "dh_tf_softref_off", "dh_tf_p2"),
        ("Deephaven-written (`deephaven.parquet.write` defaults)", "dh_tf_dhfile_softref_off", "dh_tf_dhfile"),
    ]
    body = []
    for label, without, with_flag in pairs:
        a, b = _ok(results, without, "reduce"), _ok(results, with_flag, "reduce")
        if a is None and b is None:
            continue
        body.append(
            [
                label,
                f"`{without}` / `{with_flag}`",
                _cell(a),
                _cell(b),
                _ratio(_value(b, "rows_per_s"), _value(a, "rows_per_s")),
                _ratio(_value(b, "first_pass_rows_per_s"), _value(a, "first_pass_rows_per_s")),
            ]
        )
    if not body:
        return ""
    files = _ratio(
        _value(_ok(results, "dh_tf_dhfile", "reduce"), "rows_per_s"),
        _value(_ok(results, "dh_tf_p2", "reduce"), "rows_per_s"),
    )
    return (
        "## JVM flag `-XX:SoftRefLRUPolicyMSPerMB=0`\n\n"
        f"dh_tf `ds.reduce` passes (default threads, prefetch 2) with `-Xmx{payload['config']['heap']}`, without and "
        "with the flag, on the generated (pyarrow-written) file and on a copy written by Deephaven. Rows/s: median "
        "(first pass).\n\n"
        + table(
            ["file", "cases", "without flag", "with flag", "with / without (median)", "with / without (first pass)"],
            body,
        )
        + f"\n\nDeephaven-written file / pyarrow-written file, without the flag: {files}.\n"
    )


def _filter_section(payload: dict[str, Any]) -> str:
    results = [r for r in payload["results"] if r["loader"].startswith("dh_tf_where_") and r["consumer"] == "reduce"]
    if not results:
        return ""
    body = []
    for r in results:
        if r.get("status") != "ok":
            body.append([f"`{r['loader']}`", "", "", r.get("status"), "", "", ""])
            continue
        body.append(
            [
                f"`{r['loader']}`",
                f"`{r.get('where')}`",
                f"{r['delivered_rows']:,} ({r['delivered_rows'] / r['num_rows']:.4f})",
                f"{r.get('where_s', 0):.2f}",
                f"{r['delivered_rows_per_s'] / 1e6:.3f} M",
                rate(r["rows_per_s"]),
                _ratio(r["rows_per_s"], _value(_ok(payload["results"], "dh_tf_p2", "reduce"), "rows_per_s")),
            ]
        )
    headers = [
        "case",
        "where",
        "kept rows (fraction)",
        "where s (once)",
        "delivered rows/s",
        "table rows/s",
        "table rows/s vs unfiltered `dh_tf_p2`",
    ]
    return (
        "## Selective filters\n\n"
        "A DQL `where` on the Parquet-backed table (evaluated once, before the passes: `where s`), then dh_tf "
        "`ds.reduce` passes over what it keeps. Delivered rows/s counts the kept rows; table rows/s counts the "
        "rows of the unfiltered table per second of a pass.\n\n" + table(headers, body) + "\n"
    )


def targets(payload: dict[str, Any]) -> list[list[str]]:
    """The issue's target ratios from this run: ``[target, a, b, ratio, goal, verdict]`` rows."""
    results = payload["results"]
    ok = _ok
    rows: list[list[str]] = []

    def add(
        target: str,
        a_label: str,
        a: float | None,
        b_label: str,
        b: float | None,
        goal: float,
        higher: bool = True,
        fmt: Any = rate,
    ) -> None:
        rows.append(
            [
                target,
                f"{a_label}: {fmt(a)}",
                f"{b_label}: {fmt(b)}",
                _ratio(a, b),
                f"{'>=' if higher else '<='} {goal}x",
                _verdict(a, b, goal, higher),
            ]
        )

    t1 = _value(ok(results, "ep_dh_tf_t1", "epochs"), "epoch1_rows_per_s")
    t2 = _value(ok(results, "ep_dh_tf_t2", "epochs"), "epoch1_rows_per_s")
    add("epoch 1, 2 reader threads vs 1", "`ep_dh_tf_t2` epoch 1", t2, "`ep_dh_tf_t1` epoch 1", t1, 1.8)
    limit2 = _value(ok(results, "limit_engine_read_t2", "read"), "rows_per_s")
    add("epoch 1 vs the raw engine read, 2 threads", "`ep_dh_tf_t2` epoch 1", t2, "`limit_engine_read_t2`", limit2, 0.9)
    cached = _value(ok(results, "ep_dh_tf_cache", "epochs"), "later_rows_per_s")
    peers = {
        "`petastorm`": _value(ok(results, "petastorm", "reduce"), "rows_per_s"),
        "`ep_petastorm_cache` epochs 2+": _value(ok(results, "ep_petastorm_cache", "epochs"), "later_rows_per_s"),
    }
    peers = {k: v for k, v in peers.items() if v is not None}
    best = max(peers, key=peers.__getitem__) if peers else "Petastorm"
    add("epochs 2+ with cache vs Petastorm (best)", "`ep_dh_tf_cache` epochs 2+", cached, best, peers.get(best), 2.0)
    ceiling = _value(ok(results, "numpy_range", "reduce"), "rows_per_s")
    add(
        "epochs 2+ with cache vs in-memory tf.data ceiling",
        "`ep_dh_tf_cache` epochs 2+",
        cached,
        "`numpy_range`",
        ceiling,
        0.6,
    )
    fit_dh = _value(ok(results, "ep_dh_tf_cache", "fit_epochs"), "fit_seconds")
    fit_np = _value(ok(results, "ep_numpy_fit", "fit_epochs"), "fit_seconds")
    add(
        f"{payload['config'].get('epochs', 5)}-epoch Keras fit with cache vs in-memory numpy (time)",
        "`ep_dh_tf_cache` fit s",
        fit_dh,
        "`ep_numpy_fit` fit s",
        fit_np,
        1.0,
        higher=False,
        fmt=lambda v: "—" if v is None else f"{v:.2f} s",
    )
    base = _value(ok(results, "dh_tf_p2", "reduce"), "rows_per_s")
    for name in [
        r["loader"] for r in results if r["loader"].startswith("dh_tf_shuffle_b") and r["consumer"] == "reduce"
    ]:
        add(
            f"shuffle vs no shuffle, engine ({name.rsplit('_b', 1)[1]} blocks)",
            f"`{name}`",
            _value(ok(results, name, "reduce"), "rows_per_s"),
            "`dh_tf_p2`",
            base,
            0.9,
        )
    add(
        "shuffle vs no shuffle, epochs 2+ from the cache",
        "`ep_dh_tf_cache_shuffle`",
        _value(ok(results, "ep_dh_tf_cache_shuffle", "epochs"), "later_rows_per_s"),
        "`ep_dh_tf_cache`",
        cached,
        0.9,
    )
    memory = [r for r in payload.get("memory") or [] if r["loader"] == "ep_dh_tf_cache" and r.get("status") == "ok"]
    if memory:
        small, big = min(memory, key=lambda r: r["num_rows"]), max(memory, key=lambda r: r["num_rows"])
        add(
            "peak RSS - JVM heap with cache, big vs small table",
            f"{big['num_rows']:,} rows",
            _rss_minus_heap(big),
            f"{small['num_rows']:,} rows",
            _rss_minus_heap(small),
            1.1,
            higher=False,
            fmt=lambda v: "—" if v is None else f"{v:.0f} MiB",
        )
    else:
        add("peak RSS - JVM heap with cache, big vs small table", "big", None, "small", None, 1.1, higher=False)
    small_batch = min(
        (r["batch_size"] for r in results if r["loader"] == "dh_tf_p2" and r["consumer"] == "reduce"), default=None
    )
    if small_batch is not None:
        memory_best = [
            _value(ok(results, n, "reduce", small_batch), "rows_per_s") for n in ("numpy_slices", "numpy_range")
        ]
        memory_best = [v for v in memory_best if v is not None]
        add(
            f"batch {small_batch} vs in-memory tf.data (best of slices/range)",
            f"`dh_tf_p2` b{small_batch}",
            _value(ok(results, "dh_tf_p2", "reduce", small_batch), "rows_per_s"),
            "in-memory",
            max(memory_best) if memory_best else None,
            0.8,
        )
    return rows


def _targets_section(payload: dict[str, Any]) -> str:
    if payload.get("interleaved"):  # issue 14: the targets come from the interleaved groups
        from benchmarks import interleaved_report

        return interleaved_report.targets_section(payload)
    rows = targets(payload)
    measured = [row for row in rows if row[-1] != "not measured"]
    if not measured:
        return ""
    return (
        "## Targets (issue 7), from this run\n\n"
        "Ratios of cases of this one run (same machine, same moment); `not measured`: a case it needs was not "
        "selected or failed (`--only @targets` runs them all).\n\n"
        + table(["target", "measured", "against", "ratio", "goal", "verdict"], rows)
        + "\n"
    )


def chart(payload: dict[str, Any], path: Path) -> None:
    """rows_per_s.png: horizontal bars (log scale), one per ok reduce or limit case, colored by batch size.

    dh_tf's labels are bold; within a batch size the fastest is at the bottom.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    results = [r for r in payload["results"] if r["consumer"] in ("reduce", "read") and r.get("status") == "ok"]
    if not results:
        return
    results.sort(key=lambda r: (r["consumer"] == "read", -(r["batch_size"] or 0), r["rows_per_s"]))
    labels = [f"{r['loader']}  (batch {r['batch_size']})" if r["batch_size"] else r["loader"] for r in results]
    keys = list(dict.fromkeys(r["batch_size"] for r in results))
    colors = {key: f"C{i}" if key else "0.5" for i, key in enumerate(keys)}
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * len(results)))
    bars = ax.barh(
        range(len(results)), [r["rows_per_s"] for r in results], color=[colors[r["batch_size"]] for r in results]
    )
    ax.bar_label(bars, labels=[rate(r["rows_per_s"]) for r in results], padding=3, fontsize=8)
    ax.set_yticks(range(len(results)), labels, fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), results):
        tick.set_fontweight("bold" if r["loader"].startswith("dh_tf") else "normal")
    handles = [
        Patch(color=colors[key], label=f"batch {key} ({_rows(results, key):,} rows)" if key else "limits, no TF")
        for key in keys
    ]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1), ncol=len(handles), fontsize=8, frameon=False)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("rows/s (median of passes, log scale)")
    m = payload["machine"]
    fig.suptitle(f"Rows/s into TensorFlow (ds.reduce) and limits — {m['cpu']}, {m['cores']} cores", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.set_xlim(right=ax.get_xlim()[1] * 3)  # room for the value labels
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def epochs_chart(payload: dict[str, Any], path: Path) -> None:
    """epochs.png: rows/s per epoch of every ok multi-epoch case (left), threads vs rows/s (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    multi = [r for r in results if r["consumer"] in ("epochs", "fit_epochs") and r.get("status") == "ok"]
    if not multi:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    for i, r in enumerate(multi):
        values = r["per_epoch_rows_per_s"]
        style = "--" if r["consumer"] == "fit_epochs" else "-"
        label = r["loader"] + (" (fit)" if r["consumer"] == "fit_epochs" else "")
        left.plot(
            range(1, len(values) + 1),
            values,
            style,
            marker="o",
            color=plt.get_cmap("tab20")(i % 20),
            label=label,
            linewidth=2.2 if "cache" in r["loader"] and r["loader"].startswith("ep_dh_tf") else 1.2,
        )
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("rows/s (median over passes, log scale)")
    left.set_xticks(range(1, max(len(r["per_epoch_rows_per_s"]) for r in multi) + 1))
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7, ncol=2)
    left.set_title("Rows/s per epoch (solid: ds.reduce, dashed: Keras fit)", fontsize=9)
    lines = [
        ("engine read limit", "limit_engine_read_t{}", "read", "rows_per_s"),
        ("dh_tf epoch 1", "ep_dh_tf_t{}", "epochs", "epoch1_rows_per_s"),
        ("dh_tf cached epochs 2+", "ep_dh_tf_cache_t{}", "epochs", "later_rows_per_s"),
    ]
    drawn = False
    for i, (label, pattern, consumer, key) in enumerate(lines):
        points = [(n, _value(_ok(results, pattern.format(n), consumer), key)) for n in (1, 2)]
        points = [(n, v) for n, v in points if v is not None]
        if points:
            right.plot([n for n, _ in points], [v for _, v in points], marker="o", color=f"C{i}", label=label)
            drawn = True
    right.set_xticks([1, 2])
    right.set_xlabel(f"reader threads (this machine: {payload['machine']['cores']} cores)")
    right.set_ylabel("rows/s")
    right.yaxis.set_major_formatter(lambda value, _: f"{value / 1e6:g} M")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    if drawn:
        right.legend(fontsize=8)
    right.set_title("Threads vs rows/s", fontsize=9)
    m = payload["machine"]
    fig.suptitle(f"dh_tf over several epochs — {m['cpu']}, {m['cores']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rows(results: list[dict[str, Any]], batch_size: int | None) -> int:
    return next(r["num_rows"] for r in results if r["batch_size"] == batch_size)


def _write(path: Path, text: str) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text)
    partial.replace(path)


def write_results(out: Path, payload: dict[str, Any]) -> None:
    """Writes results.json, results.md and rows_per_s.png into ``out`` (replacing them)."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "results.json", json.dumps(payload, indent=1))
    _write(out / "results.md", results_markdown(payload))
    chart(payload, out / "rows_per_s.png")
    epochs_chart(payload, out / "epochs.png")


def write_memory(out: Path, payload: dict[str, Any]) -> None:
    """Writes memory.json and memory.md (the standalone ``benchmarks.memory`` report) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "memory.json", json.dumps(payload, indent=1))
    _write(
        out / "memory.md",
        "# dh_tf memory vs table size\n\n" + _machine_section(payload) + "\n" + memory_markdown(payload["memory"]),
    )
