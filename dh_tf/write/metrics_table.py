"""Live training metrics: a Keras callback that fills a ticking Deephaven table during ``fit``.

Which rows and columns the table gets: NOTE [ Metrics table rows ] and NOTE [ Metrics table schema ] in
``metrics_rows.py``.

NOTE [ Publishing metrics ]
Rows are buffered on the training thread and published in chunks by a
:class:`~dh_tf.write.publisher.RowPublisher` (NOTE [ Publishing rows in chunks ] in ``publisher.py``):
at most one chunk per update-graph cycle and per ``PUBLISH_INTERVAL_S``, never one cycle per row. An
epoch's end publishes at the next cycle, whatever the interval, and ``on_train_end`` waits (at most
``FLUSH_TIMEOUT_S``) until the table holds every row, so the table is complete when ``fit`` returns.
In ``every="epoch"`` mode the callback tells Keras it is ``async_safe``: its batch hook only counts
steps, and Keras may keep dispatching batch callbacks off the training thread. The batch and ``N``
modes read the logs on the training thread after each step, as every per-batch Keras logger does
(``TensorBoard(update_freq="batch")``); between logged steps an ``N`` callback does nothing but count.

NOTE [ Console lock ]
A Deephaven IDE console command runs holding the update graph's exclusive lock, so no table ticks
until the command ends: a ``model.fit`` called in the console fills the table only afterwards. To
watch training live from the IDE, run ``fit`` on another thread: :func:`fit_in_background` does, and
returns at once (the command ends, the table ticks while the model trains).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, MissingDependencyError, UsageError
from dh_tf.tf.keras_callback import LazyKerasCallback
from dh_tf.write.metrics_rows import (
    COLUMN_TYPES,
    FIXED_COLUMNS,
    MetricsRow,
    columns_from,
    every_arg,
    metrics_arg,
    value_column_problem,
    values_of,
)
from dh_tf.write.publisher import RowPublisher
from dh_tf.write.remote_publisher import RemoteRowPublisher
from dh_tf.write.remote_sink import bind_as_arg, is_remote

__all__ = ["FIXED_COLUMNS", "FLUSH_TIMEOUT_S", "PUBLISH_INTERVAL_S", "MetricsTable"]

PUBLISH_INTERVAL_S = 0.5
FLUSH_TIMEOUT_S = 10.0


class MetricsTable(LazyKerasCallback):
    """A Keras callback whose :attr:`table` is a ticking, append-only table of training metrics.

    Columns: ``Time`` (Instant), ``Epoch`` (int), ``Step`` (long), ``Rows`` (long), ``RowsPerSec``
    (double), ``EpochEnd`` (Boolean), then one double column per Keras log value (``loss``, the
    compiled metrics, ``val_*``). Which steps get a row and what the fixed columns mean: NOTE
    [ Metrics table rows ]; how the value columns are chosen: NOTE [ Metrics table schema ];
    publishing costs: NOTE [ Publishing metrics ].

    The callback is a ``keras.callbacks.Callback`` (its class is made when the first one is built,
    so importing this module imports neither Keras nor Deephaven). Pass it in ``fit(callbacks=[...])``;
    Keras calls it on the thread running ``fit``. Reusing one MetricsTable for several ``fit``
    calls appends to the same table, ``Step`` and ``Rows`` continuing; ``Epoch`` is Keras's epoch
    index. Needs a running Deephaven server (embedded or the one hosting the console), or a
    ``session`` to a remote one (NOTE [ Remote metrics ] in ``remote_publisher.py``).

    Args:
        every: ``"batch"`` (a row per step), ``"epoch"`` (a row per epoch end), or an int N (a row
            every N steps); an epoch's last step always gets a row.
        metrics: the Keras log names to keep as columns (e.g. ``["loss", "accuracy", "val_loss",
            "val_accuracy"]``), creating the table now; None (default) takes them from the first log.
        name: the name of the publisher, shown in engine logs.
        session: a ``pydeephaven.Session``: publish into an append-only input table on that server
            instead (this process needs no JVM); :attr:`table` is then a pydeephaven table.
        bind_as: with ``session``, the name the table is bound to in the server's scope (the IDE
            shows it as it ticks), or None.

    Raises:
        ValueError: ``every`` is not ``"batch"``, ``"epoch"`` or an int >= 1 (bools are not ints);
            ``metrics`` repeats a name, or holds one that is not a valid Deephaven column name or is
            a fixed column.
            ``bind_as`` without ``session``, or not an identifier.
        TypeError: ``metrics`` is not None or a non-empty list of strings; ``session`` is not a
            pydeephaven Session.
        ImportError: Keras or Deephaven cannot be imported (Deephaven needs a running JVM; not with ``session``).
        ConnectionError (RemoteWriteError): with ``session`` and ``metrics``, the server refused the table
            or its binding.

    Example:
        >>> metrics = MetricsTable(every="epoch", metrics=["loss", "val_loss"])
        >>> live = metrics.table                   # empty until fit logs its first epoch
        >>> model.fit(train, validation_data=valid, epochs=5, callbacks=[metrics])
        >>> live.where("EpochEnd").view(["Epoch", "loss", "val_loss"])
    """

    def __init__(self, every: str | int = "batch", *, metrics: Sequence[str] | None = None,
                 name: str = "dh_tf.MetricsTable", session: Any = None, bind_as: str | None = None) -> None:
        self.every = every_arg(every)
        names = None if metrics is None else metrics_arg(metrics)
        self._bind_as = bind_as_arg(bind_as, "MetricsTable")
        if session is not None and not (is_remote(session) and hasattr(session, "input_table")):
            raise ArgumentTypeError(
                f"MetricsTable: session must be a pydeephaven.Session or None (got {type(session).__name__})"
            )
        if session is None and bind_as is not None:
            raise ArgumentError(
                f"MetricsTable: bind_as needs session= (got bind_as={bind_as!r} and no session); in the server, "
                "assign metrics.table to a variable"
            )
        self._session = session
        super().__init__()  # keras.callbacks.Callback.__init__ (NOTE [ Lazy Keras callbacks ])
        self._exec_ctx = None
        if session is None:
            try:
                from deephaven.execution_context import get_exec_ctx
            except ImportError as e:
                raise MissingDependencyError(
                    "MetricsTable needs a running Deephaven server (start one with dh_tf.server.start_server) "
                    "or session= (a pydeephaven Session to a remote one)"
                ) from e
            self._exec_ctx = get_exec_ctx()
        if names is not None:
            for column in names:
                problem = value_column_problem(column)
                if problem is not None:
                    raise ArgumentError(f"MetricsTable: metrics name {column!r} cannot be a column: {problem}")
        self.name = name
        self.async_safe = self.every == "epoch"  # read by Keras: NOTE [ Publishing metrics ]
        self._columns: list[str] | None = None
        self._publisher: RowPublisher | RemoteRowPublisher | None = None
        self._pending: MetricsRow | None = None  # the latest batch row: may become the epoch's row
        self._ignored: set[str] = set()
        self._steps_lock = threading.Lock()  # batch hooks may run on Keras's threads (async_safe)
        self._steps_before = 0  # steps of finished epochs
        self._rows_before: int | None = 0  # rows of finished epochs; None once unknown
        self._steps_in_epoch = 0
        self._epoch = 0
        self._in_fit = False
        self._epoch_start: tuple[int, int | None] = (0, 0)  # (time_ns, rows) of the last row or epoch start
        self._train_done: tuple[int, int | None] | None = None  # (time_ns, rows) when the epoch's training ended
        if names is not None:
            self._create_table(names)

    @property
    def table(self) -> Any:
        """The ticking, append-only ``deephaven.table.Table`` of metrics (with ``session``: a pydeephaven table).

        Raises:
            RuntimeError: ``metrics`` was None and nothing has been logged yet (NOTE [ Metrics table
                schema ]).
        """
        if self._publisher is None:
            raise UsageError(
                "MetricsTable: the table is created at the first logged step, since the Keras log names are "
                "not known before; pass metrics=[...] (e.g. ['loss', 'val_loss']) to create it up front"
            )
        return self._publisher.table

    @property
    def columns(self) -> list[str] | None:
        """The value columns (log names), or None before they are fixed."""
        return None if self._columns is None else list(self._columns)

    # Keras hooks, all on the thread running fit except on_train_batch_end in "epoch" mode.

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._in_fit = True

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._steps_in_epoch = 0
        self._train_done = None
        self._epoch_start = (time.time_ns(), self._rows_before)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.every == "epoch":  # maybe on a Keras thread, in any order: only count
            with self._steps_lock:
                self._steps_in_epoch = max(self._steps_in_epoch, batch + 1)
            return
        self._steps_in_epoch = batch + 1
        if self._pending is not None:  # not the epoch's last step after all
            self._enqueue(self._pending)
            self._pending = None
        step = self._steps_before + self._steps_in_epoch
        if self.every == "batch" or step % self.every == 0:
            self._pending = self._new_row(logs or {}, time.time_ns(), self._rows_now(), epoch_end=False)

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        # Validation resets the loss tracker, so count the epoch's training rows before it does.
        if self._in_fit and self._train_done is None:
            self._train_done = (time.time_ns(), self._rows_now())

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = logs or {}
        step = self._steps_before + self._steps_in_epoch
        pending, self._pending = self._pending, None
        if pending is not None and pending.step == step:
            pending.values.update(self._values(logs))
            pending.epoch_end = True
            row = pending
        else:
            if pending is not None:
                self._enqueue(pending)
            time_ns, rows = self._train_done or (time.time_ns(), self._rows_now())
            row = self._new_row(logs, time_ns, rows, epoch_end=True)
        self._enqueue(row)
        self._steps_before = step
        self._rows_before = row.rows
        assert self._publisher is not None  # made by _new_row at the latest
        self._publisher.publish_soon()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Publishes what is left and waits (bounded) until the table holds every row."""
        self._in_fit = False
        if self._pending is not None:  # fit stopped mid-epoch (stop_training)
            self._enqueue(self._pending)
            self._pending = None
        self.flush()

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Publishes the buffered rows now and waits until the table holds them.

        Safe from any thread except the update graph's own (it would wait for itself), and safe to
        call twice.

        Args:
            timeout_s: the longest wait, seconds.

        Returns:
            True if the table holds every logged row, False on timeout or after a publishing error
            (which is also reported as a ``RuntimeWarning``).
        """
        if self._publisher is None:
            return True
        return self._publisher.flush(timeout_s)  # under a console command's lock: False (NOTE [ Console lock ])

    def close(self) -> None:
        """Publishes what is left; with ``session``, releases this client's export of the table.

        A table bound with ``bind_as`` stays on the server. Safe to call twice, from any thread.
        """
        if isinstance(self._publisher, RemoteRowPublisher):
            self._publisher.close(FLUSH_TIMEOUT_S)
        else:
            self.flush()

    # Rows.

    def _rows_now(self) -> int | None:
        """Training rows seen so far (NOTE [ Metrics table rows ]), on the training thread."""
        tracker = getattr(self.model, "_loss_tracker", None)
        if tracker is None or self._rows_before is None:
            return self._tf_keras_rows_now()
        count = float(np.asarray(tracker.count))
        if count <= 0:  # a train_step that does not feed Keras's loss tracker
            return None
        return self._rows_before + int(round(count))

    def _tf_keras_rows_now(self) -> int | None:
        """:meth:`_rows_now` of a tf_keras model: its compiled loss's mean is weighted by each batch's rows.

        Under a tf.distribute strategy the count is a variable summed over the replicas when read (a
        collective op across workers: every worker must run this callback, as every worker runs ``fit``).
        """
        mean = getattr(getattr(self.model, "compiled_loss", None), "_total_loss_mean", None)
        if mean is None or self._rows_before is None:
            return None
        count = float(np.asarray(mean.count.read_value()))
        return None if count <= 0 else self._rows_before + int(round(count))

    def _new_row(self, logs: Mapping[str, Any], time_ns: int, rows: int | None, epoch_end: bool) -> MetricsRow:
        if self._columns is None:
            self._create_table(columns_from(logs, self._ignore))
        start_ns, start_rows = self._epoch_start
        rows_per_sec = None
        if rows is not None and start_rows is not None and time_ns > start_ns:
            rows_per_sec = (rows - start_rows) / ((time_ns - start_ns) / 1e9)
        self._epoch_start = (time_ns, rows)
        step = self._steps_before + self._steps_in_epoch
        return MetricsRow(time_ns, self._epoch, step, rows, rows_per_sec, epoch_end, self._values(logs))

    def _values(self, logs: Mapping[str, Any]) -> dict[str, float]:
        assert self._columns is not None  # set by _new_row before any row exists
        return values_of(logs, self._columns, self._ignore)

    def _ignore(self, key: str, reason: str) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            warnings.warn(f"MetricsTable: ignoring the Keras log {key!r}: {reason}", UserWarning, stacklevel=4)

    # Publishing: NOTE [ Publishing metrics ], done by write/publisher.py.

    def _create_table(self, columns: list[str]) -> None:
        definition = {**COLUMN_TYPES, **dict.fromkeys(columns, "double")}
        if self._session is not None:
            self._publisher = RemoteRowPublisher(self._session, definition, bind_as=self._bind_as,
                                                 interval_s=PUBLISH_INTERVAL_S, where="MetricsTable")
        else:
            self._publisher = RowPublisher(self.name, definition, self._exec_ctx,
                                           interval_s=PUBLISH_INTERVAL_S, where="MetricsTable")
        self._columns = columns

    def _enqueue(self, row: MetricsRow) -> None:
        assert self._publisher is not None
        self._publisher.add(row.as_dict())
