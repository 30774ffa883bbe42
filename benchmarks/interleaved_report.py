"""The interleaved groups in the report: their tables, the JVM option check, and the targets (issues 14, 24).

Takes the ``interleaved`` list :mod:`benchmarks.interleaved` returns (one dict per group: ``name``,
``rows``, ``batch_size``, ``arms`` -> figures from :func:`benchmarks.interleaved.summarize`). Tables show
the **median** warm pass first, the best and the min..max range beside it; verdicts use the ratio of
medians (the best passes' ratio is beside it); the cold (first) pass is apart. :func:`targets` feeds
the targets table of results.md (:mod:`benchmarks.report`) when the run has interleaved groups.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.report import _machine_section, _rss_minus_heap, _write, rate, table

GOALS = ("issue 24 (consumer reads every byte): cached >= 0.9x the fastest in-memory feed and >= 2x the best peer "
         "that does not hold the decoded table in RAM; shuffled cached >= 0.7x the in-memory permutation gather and "
         ">= 2x the best such peer's shuffled epoch (quality stated); epoch 1 >= 1.0x the best peer; fit <= 1.05x. "
         "Earlier (issue 14, kept for comparison): cached >= 0.9x range-sliced, >= 1.5x Petastorm; shuffled >= 0.9x; "
         "fit <= 1.0x; batch 32 >= 0.9x; epoch 1 >= 0.95x")
DISK_PEERS = {
    "ceiling": ("pyarrow_iter_read", "tfdata_saveload_read", "hf_read", "petastorm_read", "petastorm_cache_read"),
    "shuffle_peers": ("hf_shuffle_read", "petastorm_shuffle_cache_read", "petastorm_shuffle_queue_cache_read"),
    "epoch1_peers": ("pyarrow_iter_epoch1", "pyarrow_table_epoch1", "tfdata_memcache_epoch1", "hf_epoch1",
                     "petastorm_epoch1_read"),
}
"""Per group, the peers a target compares dh_tf with: those that do not hold the decoded table in RAM (for
epoch 1, every peer: all of them read the file in that epoch)."""


def arm(groups: list[dict[str, Any]], group: str, name: str) -> dict[str, Any] | None:
    """The figures of arm ``name`` of ``group`` when it has warm passes and no error, else None."""
    for g in groups:
        if g["name"] == group:
            found = g["arms"].get(name)
            if found and "error" not in found and found.get("warm_passes"):
                return found
    return None


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def targets(groups: list[dict[str, Any]], memory: list[dict[str, Any]] | None = None) -> list[list[str]]:
    """``[target, measured, against, ratio of best passes, ratio of medians, goal, verdict]`` rows."""
    rows: list[list[str]] = []

    def add(target: str, a_label: str, a: dict | None, b_label: str, b: dict | None, goal: float,
            time_based: bool = False) -> None:
        if time_based:  # lower is better: best = shortest pass
            best = (a["min_s"], b["min_s"]) if a and b else None
            med = (a["median_s"], b["median_s"]) if a and b else None
            shown = (_seconds(a and a["median_s"]), _seconds(b and b["median_s"]))
        else:
            best = (a["best_rows_per_s"], b["best_rows_per_s"]) if a and b else None
            med = (a["median_rows_per_s"], b["median_rows_per_s"]) if a and b else None
            shown = (rate(a and a["median_rows_per_s"]), rate(b and b["median_rows_per_s"]))
        ratio = med[0] / med[1] if med else None
        verdict = "not measured" if ratio is None else (
            "PASS" if (ratio <= goal if time_based else ratio >= goal) else "MISS")
        rows.append([
            target, f"{a_label}: {shown[0]}", f"{b_label}: {shown[1]}",
            "—" if ratio is None else f"**{ratio:.2f}x**", "—" if best is None else f"{best[0] / best[1]:.2f}x",
            f"{'<=' if time_based else '>='} {goal}x", verdict,
        ])

    def fastest(group: str, names: tuple[str, ...]) -> tuple[str, dict | None]:
        found = {n: a for n in names if (a := arm(groups, group, n))}
        name = max(found, key=lambda n: found[n]["median_rows_per_s"]) if found else (names[0] if names else "—")
        return name, found.get(name)

    cached_read = arm(groups, "ceiling", "dh_tf_cache_read")
    name, top = fastest("ceiling", ("ceiling_read", "ceiling_norewrite_read"))
    add("cached epochs vs the fastest in-memory feed (reads every byte)", "`dh_tf_cache_read`", cached_read,
        f"`{name}`", top, 0.9)
    name, top = fastest("ceiling", DISK_PEERS["ceiling"])
    add("cached epochs vs the best peer not holding the decoded table in RAM", "`dh_tf_cache_read`", cached_read,
        f"`{name}`", top, 2.0)
    shuffled = arm(groups, "shuffle_peers", "dh_tf_cache_shuffle_read")
    add("shuffled cached epochs vs the in-memory full-permutation gather", "`dh_tf_cache_shuffle_read`", shuffled,
        "`gather_perm_read`", arm(groups, "shuffle_peers", "gather_perm_read"), 0.7)
    name, top = fastest("shuffle_peers", DISK_PEERS["shuffle_peers"])
    add(f"shuffled cached epochs vs the best such peer's shuffled epoch ({_quality_note(shuffled, top)})",
        "`dh_tf_cache_shuffle_read`", shuffled, f"`{name}`", top, 2.0)
    name, top = fastest("epoch1_peers", DISK_PEERS["epoch1_peers"])
    add("epoch 1 vs the best peer's epoch 1 (new loader per pass, build timed)", "`dh_tf_epoch1`",
        arm(groups, "epoch1_peers", "dh_tf_epoch1"), f"`{name}`", top, 1.0)
    add("Keras fit with cache vs in-memory numpy fit, parity (time per fit)", "`dh_tf_cache_fit`",
        arm(groups, "fit", "dh_tf_cache_fit"), "`numpy_fit`", arm(groups, "fit", "numpy_fit"), 1.05,
        time_based=True)

    cached = arm(groups, "cached", "dh_tf_cache")
    add("(issue 14) cached epochs vs in-memory range-sliced arm, count-only consumer", "`dh_tf_cache`", cached, "`numpy_range`",
        arm(groups, "cached", "numpy_range"), 0.9)
    peers = {n: arm(groups, "petastorm", n) for n in
             ("petastorm", "petastorm_cache", "petastorm_epochs", "petastorm_epochs_cache")}
    peers = {n: v for n, v in peers.items() if v}
    best_peer = max(peers, key=lambda n: peers[n]["best_rows_per_s"]) if peers else None
    add("cached epochs vs Petastorm's best warm epoch", "`dh_tf_cache`", arm(groups, "petastorm", "dh_tf_cache"),
        f"`{best_peer or 'petastorm'}`", peers.get(best_peer or ""), 1.5)
    add("cached epochs vs tf.data `Dataset.cache(filename)` (the baseline to beat)", "`dh_tf_cache`", cached,
        "`dh_tf_tfcache`", arm(groups, "cached", "dh_tf_tfcache"), 1.0)
    add("shuffled cached epochs vs unshuffled cached", "`dh_tf_cache_shuffle`",
        arm(groups, "shuffle", "dh_tf_cache_shuffle"), "`dh_tf_cache`", arm(groups, "shuffle", "dh_tf_cache"), 0.9)
    add("shuffled vs unshuffled cached, consumer reads every byte", "`dh_tf_cache_shuffle_read`",
        arm(groups, "shuffle", "dh_tf_cache_shuffle_read"), "`dh_tf_cache_read`",
        arm(groups, "shuffle", "dh_tf_cache_read"), 0.9)
    add("Keras fit with cache vs in-memory numpy fit (time per fit)", "`dh_tf_cache_fit`",
        arm(groups, "fit", "dh_tf_cache_fit"), "`numpy_fit`", arm(groups, "fit", "numpy_fit"), 1.0, time_based=True)
    ceilings = [a for a in (arm(groups, "batch32", "numpy_range"), arm(groups, "batch32", "numpy_slices")) if a]
    ceiling = max(ceilings, key=lambda a: a["best_rows_per_s"]) if ceilings else None
    for name in ("dh_tf", "dh_tf_cache"):
        add(f"batch 32 vs in-memory tf.data ({'engine' if name == 'dh_tf' else 'cached epochs'})", f"`{name}`",
            arm(groups, "batch32", name), "in-memory best", ceiling, 0.9)
    add("epoch 1 vs the raw engine read, same reader threads", "`dh_tf_epoch1`", arm(groups, "epoch1", "dh_tf_epoch1"),
        "`engine_read`", arm(groups, "epoch1", "engine_read"), 0.95)
    runs = [r for r in memory or [] if r["loader"] == "ep_dh_tf_cache" and r.get("status") == "ok"]
    if len(runs) > 1:
        small, big = min(runs, key=lambda r: r["num_rows"]), max(runs, key=lambda r: r["num_rows"])
        a, b = _rss_minus_heap(big), _rss_minus_heap(small)
        ratio = a / b if a is not None and b else None
        rows.append([
            "peak RSS - JVM heap with cache, big vs small table (one process each)",
            f"{big['num_rows']:,} rows: {a:.0f} MiB" if a is not None else "—",
            f"{small['num_rows']:,} rows: {b:.0f} MiB" if b is not None else "—",
            "—" if ratio is None else f"{ratio:.2f}x", "—", "<= 1.1x",
            "not measured" if ratio is None else ("PASS" if ratio <= 1.1 else "MISS"),
        ])
    return rows


def _quality_note(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """'adjacent share A vs B': the quality each shuffle was measured at."""
    def share(x: dict[str, Any] | None) -> str:
        quality = (x or {}).get("quality") or {}
        return f"{quality['adjacent_share']:.4f}" if "adjacent_share" in quality else "?"
    return f"adjacent share {share(a)} vs {share(b)}"


def targets_section(payload: dict[str, Any]) -> str:
    """The targets table from the interleaved groups (and the memory runs, when present)."""
    rows = targets(payload["interleaved"], payload.get("memory"))
    return (
        "## Targets (issues 24 and 14), from the interleaved groups of this run\n\n"
        "Each ratio compares arms of one interleaved group (same process where they can share one, passes "
        "alternating A B A B ...): the verdict is on the ratio of the **median** warm passes, the ratio of the "
        "best passes beside it; the cold first pass is not in either. `not measured`: an arm it needs failed or "
        f"its group did not run. Goals: {GOALS}.\n\n"
        + table(["target", "measured (median)", "against (median)", "ratio (median)", "ratio (best)", "goal",
                 "verdict"], rows)
        + "\n"
    )


def _spread(a: dict[str, Any]) -> str:
    return f"{(a['max_s'] - a['min_s']) / a['median_s'] * 100:.0f}%"


def groups_section(payload: dict[str, Any]) -> str:
    """One table per group: every arm's cold pass, then best / median / worst of the warm passes."""
    parts = [
        "## Interleaved groups\n\n"
        f"Each group runs its arms alternately, one pass at a time (A B A B ...): a cold round first (reported "
        f"apart), then {payload['config'].get('passes', '?')} warm rounds. Arms in the same `process` share one "
        "process (and one JVM); arms in different processes alternate by process, the idle one blocked on its "
        "input. The median warm pass comes first (in bold), then the best and the range. `fill s`: the epoch "
        "that filled a cache, at build time, never a pass. `spread`: (slowest - fastest) / median of the warm "
        "passes, the noise of this machine at that moment. `adjacent share / abs corr`: the shuffle quality of "
        "one untimed epoch (benchmarks/quality.py: the share of output neighbours that were table neighbours, "
        "and |corr| of table position and output order; 1 / 1 is table order, ~0 / ~0 a uniform permutation). "
        "GC: pause ms per pass from `-Xlog:gc` (median of the warm passes; cold pass in parentheses).\n"
    ]
    for g in payload["interleaved"]:
        timed = any(a.get("kind") == "fit" for a in g["arms"].values())
        body = []
        for name in g["order"]:
            a = g["arms"][name]
            if "error" in a or not a.get("warm_passes"):
                body.append([f"`{name}`", a["process"], f"**failed**: {str(a.get('error', 'no passes'))[:300]}",
                             "", "", "", "", "", "", "", ""])
                continue
            if timed:
                figures = [f"**{_seconds(a['median_s'])}**", _seconds(a["min_s"]),
                           f"{_seconds(a['min_s'])} .. {_seconds(a['max_s'])}", _seconds(a["cold_s"])]
            else:
                figures = [f"**{rate(a['median_rows_per_s'])}**", rate(a["best_rows_per_s"]),
                           f"{rate(a['worst_rows_per_s'])} .. {rate(a['best_rows_per_s'])}", rate(a["cold_rows_per_s"])]
            gc = (f"{a['gc_pause_ms_median']:.0f} ({a['cold_gc_pause_ms']:.0f})"
                  if a.get("gc_pause_ms_median") is not None and a.get("cold_gc_pause_ms") is not None else "—")
            fill = f"{a['fill_s']:.2f}" if a.get("fill_s") is not None else "—"
            quality = a.get("quality") or {}
            shown = (f"{quality['adjacent_share']:.4f} / {quality['abs_corr']:.4f}" if "adjacent_share" in quality
                     else "—")
            peak = a.get("process_final", {}).get("peak_rss_mib")
            body.append([f"`{name}`", a["process"], *figures, _spread(a), fill, shown, gc,
                         "—" if peak is None else f"{peak:.0f}"])
        unit = "s per fit" if timed else "rows/s"
        headers = ["arm", "process", f"median {unit}", f"best {unit}", "min .. max", f"cold {unit}", "spread",
                   "fill s", "adjacent share / abs corr", "GC pause ms", "process peak RSS MiB"]
        threads = f", default reader threads {g['default_reader_threads']}" if "default_reader_threads" in g else ""
        cache = f"\n\nPage cache: {g['page_cache']}." if g.get("page_cache") else ""
        parts.append(f"### `{g['name']}`: {g['rows']:,} rows, batch {g['batch_size']}{threads} ({g['wall_s']} s)"
                     f"{cache}\n\n" + table(headers, body) + "\n")
    jvm = jvm_section(payload)
    return "\n".join(parts) + ("\n" + jvm if jvm else "")


def jvm_section(payload: dict[str, Any]) -> str:
    """The JVM option check: epoch-1 passes per option set, GC pause totals, and the call against noise."""
    group = next((g for g in payload["interleaved"] if g["name"] == "jvm"), None)
    if group is None:
        return ""
    flags = {p["key"]: " ".join(p.get("jvm_args") or []) or "(start_server defaults: G1)" for p in group["processes"]}
    default = arm([group], "jvm", "jvm_default")
    body = []
    for name in group["order"]:
        a = arm([group], "jvm", name)
        if a is None:
            body.append([f"`{name}`", flags.get(name, ""), "failed", "", "", "", "", ""])
            continue
        passes = [p for p in a["passes"] if "seconds" in p]
        total = sum(p.get("gc_pause_ms", 0) for p in passes)
        call = "—"
        if default is not None and name != "jvm_default":
            if a["max_s"] < default["min_s"]:
                call = "faster beyond noise"
            elif a["min_s"] > default["max_s"]:
                call = "slower beyond noise"
            else:
                call = "ranges overlap: no difference beyond noise"
        body.append([f"`{name}`", f"`{flags.get(name, '')}`", rate(a["cold_rows_per_s"]), rate(a["best_rows_per_s"]),
                     rate(a["median_rows_per_s"]), rate(a["worst_rows_per_s"]),
                     f"{total:.0f} ms in {sum(p.get('gc_pauses', 0) for p in passes)} pauses", call])
    return (
        "### JVM option sets (dh_tf epoch 1, a new dataset per pass, one JVM per option set)\n\n"
        "Each option set in its own process (its own JVM, `-Xmx" + str(payload["config"].get("heap", "?"))
        + "`, GC logged to `logs/gc.jvm.*.log`); passes alternate between the processes. A set wins only when "
        "its slowest warm pass beats the default's fastest.\n\n"
        + table(["arm", "added JVM flags", "cold rows/s", "best", "median", "worst", "GC pauses, all passes",
                 "vs default"], body)
        + "\n"
    )


def write(out: Path, payload: dict[str, Any]) -> None:
    """Writes interleaved.json and interleaved.md (the standalone ``benchmarks.interleaved`` report)."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "interleaved.json", json.dumps(payload, indent=1))
    _write(out / "interleaved.md", "# dh_tf interleaved benchmarks\n\n" + _machine_section(payload) + "\n"
           + targets_section(payload) + "\n" + groups_section(payload))
