"""Rows into a ticking table on a Deephaven server: the remote twin of ``RowPublisher`` (``publisher.py``).

NOTE [ Remote metrics ]
``MetricsTable(session=s, bind_as="train_metrics")`` runs on a trainer with no JVM: its rows go to
an append-only input table on the server (``session.input_table(schema)``, whose schema marks it
``AppendOnly``), bound in the server's scope under ``bind_as`` (``session.bind_table``), so the IDE
shows it ticking while ``fit`` runs on the trainer. Rows are buffered on the training thread (a
deque append) and added by one publishing thread (``dh_tf-publish-remote``) in chunks, each chunk
one Flight ``DoPut`` (``import_table``) and one ``AddTableToInputTable``, its upload released at
once: at most one chunk per ``interval_s``, or at once after :meth:`RemoteRowPublisher.publish_soon`
(an epoch's end). :meth:`RemoteRowPublisher.flush` (``on_train_end``) publishes what is left, ends
the thread and waits for it (bounded): no thread outlives ``fit``, and the next row starts one again.
A failed add (the server gone) does not stop training: the failure is kept, later rows are dropped,
and ``flush`` reports it as a ``RuntimeWarning`` and returns False.
"""

from __future__ import annotations

import collections
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from dh_tf.sources.column_types import arrow_type
from dh_tf.sources.remote import release_export
from dh_tf.write.remote_sink import call

THREAD_NAME = "dh_tf-publish-remote"


class RemoteRowPublisher:
    """Rows (dicts of column -> value) into an append-only input table on a server (NOTE [ Remote metrics ]).

    ``add`` is cheap and safe from any thread; ``flush`` and ``close`` from any thread, any number of times.

    Args:
        session: an open pydeephaven Session.
        columns: column name -> one of ``publisher.ROW_TYPES`` (Instant: int nanoseconds), in order.
        bind_as: the name to bind the table to in the server's scope, or None.
        interval_s: the shortest time between two chunks unless :meth:`publish_soon` is called.
        where: the prefix of messages and warnings.

    Attributes:
        table: the ``pydeephaven`` input table (the client's export of it).

    Raises (in ``__init__``):
        RemoteWriteError: the server refused the table or the binding (nothing is left bound).
    """

    def __init__(self, session: Any, columns: Mapping[str, str], *, bind_as: str | None, interval_s: float,
                 where: str) -> None:
        import pyarrow as pa

        self.columns = dict(columns)
        self.interval_s = interval_s
        self.failure: BaseException | None = None
        self._where = where
        self._session = session
        self._schema = pa.schema([pa.field(name, arrow_type(kind)) for name, kind in self.columns.items()])
        self.table = call(where, session, "creating the table", lambda: session.input_table(schema=self._schema))
        if bind_as is not None:
            try:
                call(where, session, f"binding the table as {bind_as!r}", lambda: session.bind_table(bind_as, self.table))
            except BaseException:
                release_export(self.table)
                raise
        self._queue: collections.deque[Mapping[str, Any]] = collections.deque()
        self._num_added = 0
        self._num_published = 0
        self._num_dropped = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the rows added, the thread and its stop event
        self._publish_lock = threading.Lock()  # one chunk at a time, in order
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, row: Mapping[str, Any]) -> None:
        """Queues one row; it is added within ``interval_s`` (plus one round trip). Safe from any thread."""
        with self._lock:  # ``+=`` is a read and a write: unlocked, two threads can count one row
            self._queue.append(row)
            self._num_added += 1
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name=THREAD_NAME, daemon=True)
                self._thread.start()

    def publish_soon(self) -> None:
        """Adds the queued rows at once, whatever the interval."""
        self._wake.set()

    def flush(self, timeout_s: float) -> bool:
        """Adds the queued rows, ends the publishing thread and waits (at most ``timeout_s``) for it.

        Returns:
            True if the server table holds every row added; False on timeout or after a publishing
            error (also reported as a ``RuntimeWarning``).
        """
        with self._lock:
            thread, stop, self._thread = self._thread, self._stop, None
        if thread is not None:
            stop.set()
            self._wake.set()
            if thread is not threading.current_thread():
                thread.join(timeout_s)
        if self.failure is not None:
            warnings.warn(
                f"{self._where}: publishing rows failed, {self._num_dropped} rows dropped: {self.failure}",
                RuntimeWarning, stacklevel=3,
            )
        return self._num_published >= self._num_added

    def close(self, timeout_s: float = 10.0) -> None:
        """Flushes, then releases the client's export of the table (a bound table stays on the server)."""
        self.flush(timeout_s)
        release_export(self.table)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._publish_queued()
        self._publish_queued()

    def _publish_queued(self) -> None:
        with self._publish_lock:
            rows = []
            while self._queue:
                rows.append(self._queue.popleft())
            if not rows:
                return
            if self.failure is not None:
                self._num_dropped += len(rows)
                return
            try:
                self._add_chunk(rows)
            except Exception as error:  # kept and reported by flush: training goes on
                self.failure = error
                self._num_dropped += len(rows)
                return
            self._num_published += len(rows)

    def _add_chunk(self, rows: list[Mapping[str, Any]]) -> None:
        """One chunk: an Arrow table of ``rows`` uploaded, added to the input table, released."""
        import pyarrow as pa

        arrays = [pa.array([row.get(name) for row in rows], type=field.type) for name, field in
                  zip(self.columns, self._schema)]
        data = pa.Table.from_arrays(arrays, schema=self._schema)
        doing = f"adding {len(rows)} rows"
        piece = call(self._where, self._session, doing, lambda: self._session.import_table(data))
        try:
            call(self._where, self._session, doing, lambda: self.table.add(piece))
        finally:
            release_export(piece)
