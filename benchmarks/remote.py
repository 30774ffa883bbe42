"""Remote tables: the loader's epoch vs the raw Flight transfer of the same pages, interleaved in one run.

Three processes on loopback: this one orchestrates; a server (its own embedded Deephaven server, an
in-heap table of ``--rows`` x 16 float32 ``F0..F15`` + int32 ``Label``, served as ``bench``); a
trainer (no JVM) that runs the arms alternately, one pass of each per round, A B A B ... (one warm-up
round, then ``--passes`` timed rounds):

- ``loader_t<n>``: a ``TableLoader`` epoch (batch 4096, ``--page-rows``, ``n`` reader threads) of
  numpy ``(x [rows, 16], y)`` batches, for each ``n`` in ``--reader-threads``;
- ``raw``: the raw Flight transfer of the same pages: a server-side view of the same columns, then per
  page one ``slice``, a streamed ``DoGet`` (record batches counted, not copied) and the slice's
  release, one page after the other (the reference of the issue's ">= 0.9x the raw transfer");
- ``raw_x<n>``: the same with ``n`` pages in flight on ``n`` threads, for each ``n`` > 1.

Each arm's timed passes give min / median / max rows/s and the best; ratios to ``raw`` are best vs
best and median vs median. Every pass also records the CPU seconds of the trainer and of the server
(on shared cores the two compete: the trainer's copies slow the server's Arrow encoding).

Placements (``--placements``): ``shared`` (both processes on every core) and ``pinned`` (the server
under ``taskset -c 0``, the trainer under ``taskset -c 1``; ``--server-cpus`` / ``--trainer-cpus``), the
nearest one machine comes to two. ``--embedded`` also times the embedded read of the same table in the
server process before it serves (its own passes, not interleaved). Writes ``remote.json`` and
``remote.md`` into ``--out`` with the command, the commit (``git rev-parse HEAD``, dirty flag), the
machine and the load average before each placement.

    .venv/bin/python -m benchmarks.remote                                  # 4M rows, 1M-row pages, threads 1,2
    .venv/bin/python -m benchmarks.remote --rows 500000 --passes 5 --out /tmp/remote    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FEATURES = [f"F{i}" for i in range(16)]
LABEL = "Label"
PSK = "dh-tf-bench-psk"
TABLE = "bench"
BATCH_SIZE = 4096
PSK_AUTH = "io.deephaven.authentication.psk.PskAuthenticationHandler"
OUT = Path(__file__).resolve().parent / "results" / "remote"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _loader_arm(table: Any, page_rows: int, reader_threads: int) -> Callable[[], int]:
    import dh_tf

    loader = dh_tf.TableLoader(
        table, FEATURES, LABEL, batch_size=BATCH_SIZE, page_rows=page_rows, reader_threads=reader_threads
    )

    def one_epoch() -> int:
        return sum(len(y) for _, y in loader)

    return one_epoch


def _raw_arm(table: Any, pages: list[tuple[int, int]], in_flight: int) -> Callable[[], int]:
    """One pass of the raw transfer: a view of the loader's columns, then slice + DoGet + release per page."""
    import pyarrow.flight as flight

    session = table.session

    def one_page(view: Any, span: tuple[int, int]) -> int:
        piece = view.slice(*span)
        try:
            options = flight.FlightCallOptions(headers=session.grpc_metadata)
            reader = session._flight_client.do_get(flight.Ticket(piece.ticket.bytes), options)
            return sum(chunk.data.num_rows for chunk in reader)
        finally:
            piece.close()

    def one_pass() -> int:
        view = table.view([*FEATURES, LABEL])
        try:
            if in_flight == 1:
                return sum(one_page(view, span) for span in pages)
            with ThreadPoolExecutor(in_flight) as pool:
                return sum(pool.map(lambda span: one_page(view, span), pages))
        finally:
            view.close()

    return one_pass


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train(args: argparse.Namespace) -> None:
    """The trainer process: the arms, interleaved; prints one JSON line with every pass."""
    from pydeephaven import Session

    import dh_tf

    session = Session(port=args.port, auth_type=PSK_AUTH, auth_token=PSK)
    try:
        table = session.open_table(TABLE)
        arms = {f"loader_t{n}": _loader_arm(table, args.page_rows, n) for n in args.reader_threads}
        plan = dh_tf.TableLoader(table, FEATURES, LABEL, batch_size=BATCH_SIZE, page_rows=args.page_rows).plan
        pages = [span for page in plan.pages(table.size, 0) for span in page.spans]  # the loader's own pages
        arms["raw"] = _raw_arm(table, pages, 1)
        arms.update({f"raw_x{n}": _raw_arm(table, pages, n) for n in args.reader_threads if n > 1})
        passes: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
        for round_index in range(1 + args.passes):  # round 0 warms up: JIT, page caches, gRPC channels
            for name, one_pass in arms.items():
                server_cpu, cpu, start = _cpu_s(args.server_pid), time.process_time(), time.perf_counter()
                rows = one_pass()
                seconds = time.perf_counter() - start
                if rows != table.size:
                    raise RuntimeError(f"{name} read {rows} rows, not {table.size}")
                if round_index:
                    passes[name].append({"seconds": seconds, "trainer_cpu_s": time.process_time() - cpu,
                                         "server_cpu_s": _cpu_s(args.server_pid) - server_cpu})
        print(json.dumps({"pages": len(pages), "passes": passes}), flush=True)
    finally:
        session.close()
    assert "jpy" not in sys.modules, "the trainer process must not load a JVM"


def serve(args: argparse.Namespace) -> None:
    """The server process: build the table, optionally time the embedded read, serve until stdin closes."""
    import __main__
    from dh_tf.server import start_server

    start_server(heap=args.heap, port=args.port, psk=PSK)
    from deephaven import empty_table

    formulas = [f"{name} = (float)((i * {k + 1}) % 1000) / 1000.0f" for k, name in enumerate(FEATURES)]
    table = empty_table(args.rows).update([*formulas, f"{LABEL} = (int)(i % 2)"])
    setattr(__main__, TABLE, table)  # globals of __main__ are visible to client sessions
    embedded: dict[str, list[float]] = {}
    if args.embedded:
        for n in args.reader_threads:
            one_epoch = _loader_arm(table, args.page_rows, n)
            one_epoch()  # warm-up
            embedded[f"loader_t{n}"] = []
            for _ in range(args.passes):
                start = time.perf_counter()
                one_epoch()
                embedded[f"loader_t{n}"].append(time.perf_counter() - start)
    print(json.dumps({"ready": True, "embedded": embedded}), flush=True)
    sys.stdin.read()  # until the orchestrator closes our stdin
    os._exit(0)  # no JVM finalizers at interpreter exit


def _child(placement: str, cpus: str, role: str, args: argparse.Namespace, port: int, *more: str) -> list[str]:
    """The command line of one child process (pinned to ``cpus`` under ``taskset`` when placement is pinned)."""
    command = [sys.executable, "-m", "benchmarks.remote", f"--{role}", "--port", str(port), "--rows", str(args.rows),
               "--page-rows", str(args.page_rows), "--reader-threads", ",".join(map(str, args.reader_threads)),
               "--passes", str(args.passes), "--heap", args.heap, *more]
    return ["taskset", "-c", cpus, *command] if placement == "pinned" else command


def _read_json_line(process: subprocess.Popen, what: str, timeout_s: float) -> dict[str, Any]:
    """The first stdout line of ``process`` that starts with ``{``, within ``timeout_s``."""
    found: dict[str, Any] = {}

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                found.update(json.loads(line))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not found:
        status = process.poll()
        raise RuntimeError(f"the {what} process gave no result within {timeout_s:.0f} s (exit status {status})")
    return found


def run_placement(placement: str, args: argparse.Namespace) -> dict[str, Any]:
    """Starts a server and a trainer in ``placement``; returns their results and the load average before."""
    port = _free_port()
    load_before = list(os.getloadavg())
    server = subprocess.Popen(_child(placement, args.server_cpus, "serve", args, port,
                                     *(["--embedded"] if args.embedded else [])),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = _read_json_line(server, "server", 900)
        trainer = subprocess.Popen(_child(placement, args.trainer_cpus, "train", args, port,
                                          "--server-pid", str(server.pid)), stdout=subprocess.PIPE, text=True)
        try:
            result = _read_json_line(trainer, "trainer", args.timeout_s)
            trainer.wait(timeout=60)
        finally:
            _end(trainer)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(timeout=60)
        finally:
            _end(server)
    cpus = {"server": args.server_cpus, "trainer": args.trainer_cpus} if placement == "pinned" else "all"
    return {"placement": placement, "cpus": cpus, "load_avg_before": load_before,
            "embedded": ready.get("embedded", {}), **result}


def _end(process: subprocess.Popen) -> None:
    """Kills ``process`` (one of ours) if it is still running, and reaps it."""
    if process.poll() is None:
        process.kill()
        process.wait()


def summarize(rows: int, passes: list[dict[str, float]]) -> dict[str, Any]:
    """Rows/s min / median / max and best over the passes, with the median CPU seconds."""
    rates = sorted(rows / p["seconds"] for p in passes)
    return {"min": rates[0], "median": statistics.median(rates), "max": rates[-1], "best": rates[-1],
            "trainer_cpu_s": statistics.median(p["trainer_cpu_s"] for p in passes),
            "server_cpu_s": statistics.median(p["server_cpu_s"] for p in passes), "passes": len(rates)}


def report(args: argparse.Namespace, command: str, placements: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes remote.json and remote.md into ``args.out``; returns the payload."""
    from benchmarks.report import machine_info, table

    for result in placements:
        result["arms"] = {name: summarize(args.rows, p) for name, p in result["passes"].items()}
        raw = result["arms"]["raw"]
        for name, arm in result["arms"].items():
            arm["vs_raw_best"], arm["vs_raw_median"] = arm["best"] / raw["best"], arm["median"] / raw["median"]
            same = result["arms"].get(name.replace("loader_t", "raw_x"))
            if name.startswith("loader_t") and same is not None:
                arm["vs_raw_same_in_flight_best"] = arm["best"] / same["best"]
        for name, seconds in result["embedded"].items():
            result["arms"][name]["embedded_best"] = args.rows / min(seconds)
    payload = {"command": command, "machine": machine_info(), "rows": args.rows, "page_rows": args.page_rows,
               "batch_size": BATCH_SIZE, "passes": args.passes, "placements": placements}
    m = payload["machine"]
    dirty = f" plus uncommitted changes to {', '.join(m['git_changed_files'])}" if m["git_dirty"] else ""
    lines = [
        "# Remote reads: the loader vs the raw Flight transfer, interleaved", "",
        f"{args.rows:,} rows x 16 float32 + int32 label in the server's heap, pages of {args.page_rows:,} rows, "
        f"batch {BATCH_SIZE}; {args.passes} timed passes per arm after one warm-up round, arms interleaved.", "",
        f"Command: `{command}`", "",
        f"Commit `{m['git_commit']}`{dirty}. {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; {m['os']}; {m['date']}.",
    ]
    for result in placements:
        where = ("server and trainer share every core" if result["placement"] == "shared" else
                 f"server on cores {result['cpus']['server']}, trainer on cores {result['cpus']['trainer']} (taskset)")
        lines += ["", f"## {result['placement']}: {where}", "",
                  f"Load average before: {' / '.join(f'{v:.2f}' for v in result['load_avg_before'])}. "
                  "M rows/s; ratios to `raw` best vs best (median vs median); CPU seconds per pass (median).", ""]
        rows = []
        for name, arm in result["arms"].items():
            same = arm.get("vs_raw_same_in_flight_best")
            rows.append((f"`{name}`", f"{arm['min'] / 1e6:.2f}", f"{arm['median'] / 1e6:.2f}", f"{arm['max'] / 1e6:.2f}",
                         f"{arm['vs_raw_best']:.2f}x ({arm['vs_raw_median']:.2f}x)",
                         "—" if same is None else f"{same:.2f}x",
                         f"{arm['trainer_cpu_s']:.2f}", f"{arm['server_cpu_s']:.2f}",
                         f"{arm['embedded_best'] / 1e6:.2f}" if "embedded_best" in arm else "—"))
        lines.append(table(("arm", "min", "median", "max (best)", "vs raw", "vs raw_x same threads",
                            "trainer CPU s", "server CPU s", "embedded best"), rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "remote.md").write_text("\n".join(lines) + "\n")
    (args.out / "remote.json").write_text(json.dumps(payload, indent=1) + "\n")
    print("\n".join(lines))
    return payload


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4 * 2**20)
    parser.add_argument("--page-rows", type=int, default=2**20)
    parser.add_argument("--reader-threads", type=_ints, default=[1, 2])
    parser.add_argument("--passes", type=int, default=5, help="timed passes per arm (after one warm-up round)")
    parser.add_argument("--placements", type=lambda s: s.split(","), default=["shared", "pinned"])
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list of the server when pinned")
    parser.add_argument("--trainer-cpus", default="1", help="taskset CPU list of the trainer when pinned")
    parser.add_argument("--embedded", action="store_true", help="also time the embedded read in the server process")
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--timeout-s", type=float, default=3600, help="longest wait for the trainer's result")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return
    if args.train:
        train(args)
        return
    unknown = sorted(set(args.placements) - {"shared", "pinned"})
    if unknown:
        parser.error(f"--placements must be shared and/or pinned (got {','.join(unknown)})")
    command = shlex.join([Path(sys.executable).name, "-m", "benchmarks.remote", *(argv if argv is not None else sys.argv[1:])])
    report(args, command, [run_placement(placement, args) for placement in args.placements])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
