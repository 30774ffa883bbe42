"""Following a remote blink table over a Barrage subscription (NOTE [ Remote follow ] in remote_follow.py).

NOTE [ Remote blink follow ]
A blink table's rows live for one update cycle, so polling cannot see each once: the feed
subscribes with Barrage (``pydeephaven-ticking``'s ``BarrageProcessor``, the decoder its
``table_listener.listen`` uses) to a server-side ``view`` of the needed columns. The client copy the
processor keeps is the table as it is now, i.e. one Barrage update's rows (the blink rows of the
cycles since the last update; the server sends one update per Barrage update interval, about 1 s by
default, which bounds the latency and is the server's setting, not the client's), so memory is
bounded by the table's rate, never by its history.

- ``start()`` exports the view, opens the subscription and waits (bounded) for its first message,
  the snapshot; the snapshot's rows were added before the follow started, so they are skipped
  (``start="now"``, as the engine's listener does); every later update's added rows are copied
  into the sink page by page while it has room, the rest reported to ``sink.overflow`` (counted
  drops), as the engine's blink listener does. Removes are the previous cycle's rows leaving (blink);
  a *modified* row fails the stream with :class:`~dh_tf.errors.TableChangeError` naming the update.
- One daemon thread reads the stream and owns every resource: the view export, the DoExchange call
  and the processor. It releases them all as it ends, whatever the way out (``stop()``, ``max_rows``,
  an error, the sink closed, garbage collection). ``stop()`` cancels the stream, which ends the
  thread's blocking read at once; it then waits a bounded time (not at all from the garbage
  collector). ``listen``'s own handle is not used: its thread is not a daemon (an unstopped follow
  would keep the interpreter from exiting) and its ``stop()`` joins without a bound.
- A dropped connection, a closed Session or a failed table ends the stream with
  :class:`~dh_tf.errors.RemoteReadError` naming the server and the cause. Closing the Session does
  not end a DoExchange call (the stream just stays silent), so a second daemon thread, the watcher,
  looks at the Session every :data:`WATCH_S` seconds while the subscription lives, and cancels the
  stream once the Session is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from dh_tf.errors import FollowError, MissingDependencyError, RemoteReadError, TableChangeError
from dh_tf.sources.column_types import ColumnKind
from dh_tf.sources.protocol import PageSink, RowPage
from dh_tf.sources.remote import RemoteSource, _fill

THREAD_NAME = "dh_tf-follow-remote-blink"
"""The name of every remote blink subscription thread."""
SUBSCRIBE_WAIT_S = 60.0
"""The longest ``start()`` waits for the subscription's snapshot before failing with RemoteReadError."""
STOP_WAIT_S = 10.0
"""The longest ``stop()`` waits for the subscription thread (the stream is cancelled first)."""
WATCH_S = 0.5
"""How often the watcher looks whether the pydeephaven Session was closed (closing it leaves the stream open)."""


def ticking_module() -> Any:
    """``pydeephaven_ticking._core``, or MissingDependencyError with the install line."""
    try:
        import pydeephaven_ticking._core as core
    except ImportError as error:
        raise MissingDependencyError(
            "follow: a remote blink table is followed over a Barrage subscription, which needs "
            "pydeephaven-ticking (Linux x86_64 wheels): pip install 'dh-tf[remote]' or pip install "
            "pydeephaven-ticking==<your pydeephaven version>"
        ) from error
    return core


class RemoteBlinkFeed:
    """The rows a remote blink table adds, from a Barrage subscription (NOTE [ Remote blink follow ]).

    Attributes:
        read_rows: rows copied into the sink so far.
        updates: Barrage updates received after the snapshot.
    """

    def __init__(
        self, remote: RemoteSource, kinds: Mapping[str, ColumnKind], *, page_rows: int, max_rows: int | None,
        sink: PageSink,
    ) -> None:
        self._remote = remote
        self._kinds = dict(kinds)
        self._page_rows = int(page_rows)
        self._limit = np.inf if max_rows is None else max_rows
        self._sink = sink
        self.read_rows = 0
        self.updates = 0
        self._stopped = threading.Event()
        self._ready = threading.Event()  # the snapshot arrived (or the thread ended)
        self._ended = threading.Event()  # the reader thread ended (the watcher ends too)
        self._lock = threading.Lock()
        self._stream: Any = None  # the DoExchange reader, for stop()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribes and waits (at most :data:`SUBSCRIBE_WAIT_S`) for the snapshot.

        Raises:
            MissingDependencyError: pydeephaven-ticking is not installed.
            RemoteReadError: the server cannot be reached, refuses the subscription or does not answer.
        """
        if self._stopped.is_set() or self._thread is not None:
            return
        core = ticking_module()
        self._thread = threading.Thread(target=self._run, args=(core,), name=THREAD_NAME, daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name=THREAD_NAME, daemon=True).start()
        if not self._ready.wait(SUBSCRIBE_WAIT_S):
            self.stop()
            raise RemoteReadError(
                f"follow: subscribing to the blink table on Deephaven server {self._remote.server} failed: "
                f"no snapshot within {SUBSCRIBE_WAIT_S:.0f} s"
            )
        if self._start_error is not None:
            raise self._start_error

    def stop(self, wait: bool = True) -> None:
        """Cancels the subscription; with ``wait``, joins the thread a bounded time (it releases everything)."""
        self._stopped.set()
        self._cancel()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(STOP_WAIT_S)

    def _cancel(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.cancel()
            except Exception:  # already ended
                pass

    def _watch(self) -> None:
        """Cancels the stream once the Session is closed (the reader then fails the stream); ends with the reader."""
        session = self._remote.table.session
        while not self._ended.wait(WATCH_S):
            if not session.is_connected:
                self._cancel()
                return

    def _halted(self) -> bool:
        return self._stopped.is_set() or self._sink.closed() or self.read_rows >= self._limit

    def _run(self, core: Any) -> None:
        remote = self._remote
        doing = "subscribing to the blink table"
        try:
            with remote._exported(lambda: remote.table.view(list(self._kinds)), doing) as view:
                processor = core.BarrageProcessor.create(view.schema)
                try:
                    writer, stream = view.session.flight_service.do_exchange()
                except Exception as error:
                    raise remote.read_error(doing, error) from error
                with self._lock:
                    self._stream = stream
                try:
                    if self._stopped.is_set():
                        return
                    writer.write_metadata(core.BarrageProcessor.create_subscription_request(view.ticket.bytes))
                    self._follow(processor, stream, doing)
                finally:
                    with self._lock:
                        self._stream = None
                    _end_exchange(writer, stream)
        except BaseException as error:
            if not self._ready.is_set():
                self._start_error = error
            elif not self._stopped.is_set():
                self._sink.fail(error)
        finally:
            self._ready.set()
            self._ended.set()

    def _follow(self, processor: Any, stream: Any, doing: str) -> None:
        """Reads the stream until halted: the snapshot (skipped), then each update's added rows."""
        snapshot = True
        while not self._halted():
            try:
                data, metadata = stream.read_chunk()
                update = processor.process_next_chunk(data.columns, metadata)
            except StopIteration:
                if self._stopped.is_set():
                    return
                raise RemoteReadError(
                    f"follow: {doing} on Deephaven server {self._remote.server} failed: the server ended the "
                    "subscription"
                ) from None
            except Exception as error:
                if self._stopped.is_set():
                    return
                self._remote.check_open(doing)
                if failed_on_server(error):
                    raise table_failed("blink", self._remote.server, error) from error
                raise self._remote.read_error(doing, error) from error
            if update is None:  # one message of an update sent in several
                continue
            if snapshot:  # rows added before the follow started
                snapshot = False
                doing = "reading the blink table's updates"
                self._ready.set()
                continue
            self.updates += 1
            self._deliver(update)

    def _deliver(self, update: Any) -> None:
        """Checks one update and copies its added rows into the sink while it has room."""
        modified = int(update.all_modified_rows.size)
        if modified:
            raise TableChangeError(
                f"follow: the blink table on Deephaven server {self._remote.server} modified {modified} rows "
                "in one update; follow reads only tables that never modify, remove or shift rows "
                "(append-only, add-only or blink)"
            )
        rows = update.added_rows
        total = int(rows.size)
        offset = 0
        table = update.after_adds
        while offset < total and not self._halted() and self._sink.free() > 0:
            take = int(min(self._page_rows, total - offset, self._limit - self.read_rows))
            chosen = rows.Take(take)
            rows = rows.Drop(take)
            self._sink.put(_page(table, chosen, self._kinds, take))
            self.read_rows += take
            offset += take
        if offset < total and not self._stopped.is_set() and not self._sink.closed() and self.read_rows < self._limit:
            self._sink.overflow(total - offset)


def failed_on_server(error: BaseException) -> bool:
    """Whether ``error`` (or a cause) is the server refusing a table that failed, not a connection problem.

    The server answers reads of a failed table with gRPC ``INVALID_ARGUMENT`` (a slice, details only
    in its log) or ``FAILED_PRECONDITION`` ("Table is already failed", a Barrage subscription).
    """
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        code = getattr(seen, "code", None)
        name = getattr(code(), "name", "") if callable(code) else ""
        if name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION") or "FAILED_PRECONDITION" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def table_failed(kind: str, server: str, error: BaseException) -> FollowError:
    """The error for a followed table the server failed (or refuses to read), naming why that happens."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return FollowError(
        f"follow: the {kind} table on Deephaven server {server} failed on the server ({first}); the server fails "
        "a table marked append-only or blink that modifies or removes rows, and a table whose update raised an "
        "error (see the server's log); follow reads only tables that never modify, remove or shift rows "
        "(append-only, add-only or blink)"
    )


def _page(table: Any, rows: Any, kinds: Mapping[str, ColumnKind], count: int) -> RowPage:
    """The rows ``rows`` of the client table as a page of native arrays (nulls from Arrow validity)."""
    arrays = {name: np.empty(count, dtype=kind.dtype) for name, kind in kinds.items()}
    masks: dict[str, np.ndarray | None] = dict.fromkeys(kinds)
    for name, kind in kinds.items():
        chunk = table.get_column_by_name(name, True).get_chunk(rows)
        _fill(chunk, kind, arrays[name], 0, masks, name, count)
    return RowPage(arrays, masks, count)


def _end_exchange(writer: Any, stream: Any) -> None:
    """Cancels and closes the DoExchange call; quietly, since it may have ended already."""
    for close in (stream.cancel, writer.close):
        try:
            close()
        except Exception:  # a cancelled or dropped call
            pass

