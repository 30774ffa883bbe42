"""Remote tables: a trainer reading a Deephaven server over pydeephaven / Arrow Flight vs the embedded engine.

Two processes on loopback: a server process (its own embedded Deephaven server, an in-heap table of
``--rows`` x 16 float32 ``F0..F15`` + int32 ``Label``) and this process, the trainer, which has no
JVM. The server process first measures the embedded engine read of the table (a ``TableLoader``
epoch of batch-4096 numpy batches, like the trainer's, alone on the machine), then serves the
table as ``bench``; the trainer then measures remote epochs for each page size and reader-thread
count, plus the raw Flight reads (one ``slice`` per page, ``to_arrow()`` vs a streamed ``DoGet``).
Rows/s are the best of ``--repeats`` epochs after one warm-up epoch.

    .venv/bin/python -m benchmarks.remote                      # 4M rows, pages 256K/1M/4M, threads 1/2
    .venv/bin/python -m benchmarks.remote --rows 1000000 --repeats 1   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

FEATURES = [f"F{i}" for i in range(16)]
LABEL = "Label"
PSK = "dh-tf-bench-psk"
TABLE = "bench"
BATCH_SIZE = 4096


def _best_rows_per_s(one_epoch: Callable[[], int], repeats: int) -> float:
    one_epoch()  # warm-up: JIT, page caches, gRPC channels
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        rows = one_epoch()
        best = max(best, rows / (time.perf_counter() - start))
    return best


def _loader_epoch(table: Any, page_rows: int, reader_threads: int) -> Callable[[], int]:
    import dh_tf

    loader = dh_tf.TableLoader(
        table, FEATURES, LABEL, batch_size=BATCH_SIZE, page_rows=page_rows, reader_threads=reader_threads
    )

    def one_epoch() -> int:
        return sum(len(y) for _, y in loader)

    return one_epoch


def serve(args: argparse.Namespace) -> None:
    """The server process: build the table, measure the embedded read, serve it until stdin closes."""
    import __main__
    from dh_tf.server import start_server

    start_server(heap=args.heap, port=args.port, psk=PSK)
    from deephaven import empty_table

    formulas = [f"{name} = (float)((i * {k + 1}) % 1000) / 1000.0f" for k, name in enumerate(FEATURES)]
    table = empty_table(args.rows).update([*formulas, f"{LABEL} = (int)(i % 2)"])
    setattr(__main__, TABLE, table)  # globals of __main__ are visible to client sessions
    embedded = {
        f"{page_rows}/{threads}": _best_rows_per_s(_loader_epoch(table, page_rows, threads), args.repeats)
        for page_rows in args.page_rows
        for threads in args.reader_threads
    }
    print(json.dumps({"ready": True, "embedded": embedded}), flush=True)
    sys.stdin.read()  # until the trainer closes our stdin
    os._exit(0)  # no JVM finalizers at interpreter exit


def _raw_reads(table: Any, page_rows: int, repeats: int) -> dict[str, float]:
    """Rows/s of reading every page with one ``slice`` each: ``to_arrow()`` vs a streamed ``DoGet``."""
    import pyarrow.flight as flight

    def pages() -> list[tuple[int, int]]:
        return [(a, min(a + page_rows, table.size)) for a in range(0, table.size, page_rows)]

    def with_to_arrow() -> int:
        rows = 0
        for a, b in pages():
            piece = table.slice(a, b)
            rows += piece.to_arrow().num_rows
            piece.close()
        return rows

    def streamed() -> int:
        rows = 0
        session = table.session
        for a, b in pages():
            piece = table.slice(a, b)
            reader = session._flight_client.do_get(
                flight.Ticket(piece.ticket.bytes), flight.FlightCallOptions(headers=session.grpc_metadata)
            )
            for chunk in reader:
                rows += chunk.data.num_rows
            piece.close()
        return rows

    return {"to_arrow": _best_rows_per_s(with_to_arrow, repeats), "do_get": _best_rows_per_s(streamed, repeats)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4 * 2**20)
    parser.add_argument("--page-rows", type=lambda s: [int(v) for v in s.split(",")],
                        default=[2**18, 2**20, 2**22])
    parser.add_argument("--reader-threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return
    port = args.port or _free_port()
    command = [sys.executable, "-m", "benchmarks.remote", "--serve", "--port", str(port), "--rows", str(args.rows),
               "--page-rows", ",".join(map(str, args.page_rows)),
               "--reader-threads", ",".join(map(str, args.reader_threads)),
               "--repeats", str(args.repeats), "--heap", args.heap]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        embedded = _wait_ready(server)
        results = _measure_remote(port, args)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=60)
    _report(args, embedded, results)
    assert "jpy" not in sys.modules, "the trainer process must not load a JVM"


def _wait_ready(server: subprocess.Popen, timeout_s: float = 900) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = server.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the server process exited (status {server.wait()})")
        if line.startswith("{"):
            return json.loads(line)["embedded"]
    raise TimeoutError(f"the server process was not ready after {timeout_s} s")


def _measure_remote(port: int, args: argparse.Namespace) -> dict[str, Any]:
    from pydeephaven import Session

    session = Session(port=port, auth_type="io.deephaven.authentication.psk.PskAuthenticationHandler",
                      auth_token=PSK)
    try:
        table = session.open_table(TABLE)
        loader = {
            f"{page_rows}/{threads}": _best_rows_per_s(_loader_epoch(table, page_rows, threads), args.repeats)
            for page_rows in args.page_rows
            for threads in args.reader_threads
        }
        raw = {str(page_rows): _raw_reads(table, page_rows, args.repeats) for page_rows in args.page_rows}
        return {"loader": loader, "raw": raw}
    finally:
        session.close()


def _report(args: argparse.Namespace, embedded: dict[str, float], results: dict[str, Any]) -> None:
    best_embedded = max(embedded.values())
    print(f"{args.rows:,} rows x 16 float32 + int32 label, batch {BATCH_SIZE}, best of {args.repeats} epochs, "
          f"M rows/s (best embedded: {best_embedded / 1e6:.2f})")
    print("| page_rows | reader_threads | embedded | remote | remote / best embedded |")
    print("|---|---|---|---|---|")
    for key, remote in results["loader"].items():
        page_rows, threads = key.split("/")
        print(f"| {int(page_rows):,} | {threads} | {embedded[key] / 1e6:.2f} | {remote / 1e6:.2f} | "
              f"{remote / best_embedded:.2f} |")
    print("\nRaw Flight reads, one slice per page (no loader), M rows/s:")
    print("| page_rows | slice + to_arrow() | slice + streamed DoGet |")
    print("|---|---|---|")
    for page_rows, raw in results["raw"].items():
        print(f"| {int(page_rows):,} | {raw['to_arrow'] / 1e6:.2f} | {raw['do_get'] / 1e6:.2f} |")
    print(json.dumps({"rows": args.rows, "embedded": embedded, **results}))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
