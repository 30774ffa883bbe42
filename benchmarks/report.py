"""The report: results.md (markdown tables), results.json (everything), rows_per_s.png (bar chart).

Takes the payload :mod:`benchmarks.run` builds: ``command``, ``config``, ``machine``, ``loaders``
(name -> description, note), ``results`` (one flat dict per case: the Case fields, ``status``, and
when ok ``rows_per_s``, ``first_pass_rows_per_s``, ``seconds``, ``peak_rss_mib``, ...), and
optionally ``memory`` (results of :mod:`benchmarks.memory`).
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
    return {
        "cpu": models[0] if models else cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions,
    }


def rate(value: float | None) -> str:
    """Rows/s in millions: ``5.23 M``."""
    return "—" if value is None else f"{value / 1e6:.2f} M"


def summary(result: dict[str, Any]) -> str:
    """One line about a case's result, for the console."""
    if result.get("status") != "ok":
        return f"{result.get('status')}: {str(result.get('error'))[:300]}"
    heap = f", JVM heap peak {result['jvm_heap_peak_mib']:.0f} MiB" if "jvm_heap_peak_mib" in result else ""
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
    rows = [
        ("CPU", f"{m['cpu']}, {m['cores']} cores"),
        ("RAM", f"{m['ram_gib']} GiB"),
        ("OS / Python", f"{m['os']} / Python {m['python']}"),
        ("date", m["date"]),
        ("versions (main venv)", ", ".join(f"{k} {v}" for k, v in m["versions"].items())),
    ]
    petastorm = [
        r["versions"] for r in payload.get("results", []) if r.get("loader") == "petastorm" and "versions" in r
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
    return f"{batches} ({math.ceil(result['num_rows'] / result['batch_size'])})"


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


def memory_markdown(results: list[dict[str, Any]]) -> str:
    """The memory-vs-table-size section."""
    body = [
        [
            f"{r['num_rows']:,}",
            f"{r['num_rows'] * ROW_BYTES / 1e9:.2f}",
            r.get("status"),
            _mib(r, "rss_before_passes_mib"),
            _mib(r, "peak_rss_mib"),
            _mib(r, "jvm_heap_peak_mib"),
            _mib(r, "jvm_heap_max_mib"),
            _cell(r),
        ]
        for r in results
    ]
    headers = [
        "rows",
        "decoded GB",
        "status",
        "RSS before epoch MiB",
        "peak RSS MiB",
        "JVM heap peak MiB",
        "JVM heap max MiB",
        "rows/s",
    ]
    loader = results[0]["loader"] if results else ""
    return (
        f"## Memory vs table size (`{loader}`, one epoch, batch {results[0]['batch_size'] if results else ''})\n\n"
        "Each size in its own process; peak RSS covers Python and the embedded JVM.\n\n" + table(headers, body) + "\n"
    )


NOTES = """## How to read this

- Each case runs in its own process: peak RSS (`ru_maxrss`) is that loader's alone, and includes the
  embedded JVM for the Deephaven loaders. For Ray it is the driver only (Ray's workers are other
  processes). In-memory loaders hold the whole table, and their RSS shows it.
- rows/s = table rows / median pass time. The first pass includes tracing and cold caches.
- Batch sizes below 1024 use the smaller table for every loader, so those rates compare the same rows.
- On a 2-core machine the reader and TensorFlow compete for the same cores; numbers are noisy.
"""


def results_markdown(payload: dict[str, Any]) -> str:
    """The whole results.md."""
    parts = [
        "# dh_tf benchmarks\n",
        _machine_section(payload),
        _reduce_section(payload),
        _fit_section(payload),
        _limits_section(payload),
    ]
    if payload.get("memory"):
        parts.append(memory_markdown(payload["memory"]))
    parts += [_all_cases_section(payload), NOTES]
    return "\n".join(part for part in parts if part)


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


def write_memory(out: Path, payload: dict[str, Any]) -> None:
    """Writes memory.json and memory.md (the standalone ``benchmarks.memory`` report) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "memory.json", json.dumps(payload, indent=1))
    _write(
        out / "memory.md",
        "# dh_tf memory vs table size\n\n" + _machine_section(payload) + "\n" + memory_markdown(payload["memory"]),
    )
