"""Live training metrics: a Keras callback that fills a ticking Deephaven table during ``fit``.

Example:
    >>> metrics = MetricsTable(every=10)            # a row every 10 steps, and one per epoch
    >>> model.fit(ds, epochs=3, validation_data=valid, callbacks=[metrics])
    >>> metrics.table                               # ticks while fit runs
    >>> plot_metrics(metrics)                       # loss and each metric by Step

NOTE [ Metrics table rows ]
One row per logged step, ``Step`` strictly increasing: a "step" is one training batch and ``Step``
counts them across epochs (and across several ``fit`` calls with the same MetricsTable).
- ``every="batch"``: a row for every step.
- ``every=N``: a row for every step whose ``Step`` is a multiple of N.
- ``every="epoch"``: no batch rows.
In every mode the last step of each epoch has a row with ``EpochEnd`` true, carrying Keras's epoch
logs, ``val_*`` included (when that step already has a batch row, the two are one row). Batch rows
carry Keras's batch logs, which are the epoch's running averages so far (what the progress bar
shows), so the last step's train values equal the epoch's. With ``steps_per_execution=k`` Keras
calls batch hooks every k steps, so only those steps can have rows.
- ``Rows``: training rows seen so far, partial batches counted exactly. Keras does not tell
  callbacks the batch size; its loss tracker (``model._loss_tracker``, a ``Mean`` weighted by each
  batch's row count) does: ``Rows`` is the rows of finished epochs plus its count, read on the
  training thread after the step. The tracker is float32: exact while an epoch has under 2**24
  rows, and beyond that for batch sizes that are powers of two. A model whose own ``train_step``
  does not feed that tracker gets null ``Rows`` and ``RowsPerSec``.
- ``RowsPerSec``: training rows since the previous row of the same epoch (or the epoch's start)
  over the wall time between them; validation and the time between epochs are not counted.
- ``Time``: when the step's training finished.

NOTE [ Metrics table schema ]
The log names are only known once Keras logs something, and a Deephaven table's columns are fixed
when it is created. With ``metrics=[...]`` the table is created at once with exactly those value
columns (``.table`` works before ``fit``: open it in the IDE first, then train). With
``metrics=None`` it is created at the first logged row, with the names of that log plus
``val_<name>`` for each name without one (so batch logs still get validation columns); ``.table``
raises before that. Afterwards, a log name that is not a column (or not a valid Deephaven column
name, or not a scalar) is ignored, with one ``UserWarning`` per name. A value a row lacks is null;
a NaN that Keras logged (a diverged loss) stays NaN.

NOTE [ Publishing metrics ]
Rows are buffered in Python on the training thread (a deque append) and published in chunks from
the update graph's own flush callback (``table_publisher`` into a blink table, kept by
``blink_to_append_only``): at most one chunk per update-graph cycle and per ``PUBLISH_INTERVAL_S``,
never one cycle per row. An epoch's end publishes at the next cycle, whatever the interval, and
``on_train_end`` waits (at most ``FLUSH_TIMEOUT_S``) until the table holds every row, so the table
is complete when ``fit`` returns. In ``every="epoch"`` mode the callback tells Keras it is
``async_safe``: its batch hook only counts steps, and Keras may keep dispatching batch callbacks
off the training thread. The batch and ``N`` modes read the logs on the training thread after each
step, as every per-batch Keras logger does (``TensorBoard(update_freq="batch")``); between logged
steps an ``N`` callback does nothing but count.

NOTE [ Console lock ]
A Deephaven IDE console command runs holding the update graph's exclusive lock, so no table ticks
until the command ends: a ``model.fit`` called in the console fills the table only afterwards. To
watch training live from the IDE, run ``fit`` on another thread: :func:`fit_in_background` does, and
returns at once (the command ends, the table ticks while the model trains).
"""

from __future__ import annotations

import collections
import numbers
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, MissingDependencyError, UsageError
from dh_tf.tf.keras_callback import LazyKerasCallback

FIXED_COLUMNS = ("Time", "Epoch", "Step", "Rows", "RowsPerSec", "EpochEnd")
PUBLISH_INTERVAL_S = 0.5
FLUSH_TIMEOUT_S = 10.0
_EVERY_CHOICES = ("batch", "epoch")


@dataclass
class _Row:
    time_ns: int
    epoch: int
    step: int
    rows: int | None
    rows_per_sec: float | None
    epoch_end: bool
    values: dict[str, float] = field(default_factory=dict)


def _every_arg(every: Any) -> str | int:
    if isinstance(every, str) and every in _EVERY_CHOICES:
        return every
    if isinstance(every, numbers.Integral) and not isinstance(every, bool) and every >= 1:
        return int(every)
    raise ArgumentError(
        f"MetricsTable: every must be 'batch', 'epoch' or an int >= 1 (got {every!r} of type {type(every).__name__})"
    )


def _metrics_arg(metrics: Any) -> list[str]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise ArgumentTypeError(
            "MetricsTable: metrics must be None or a non-empty list of Keras log names such as "
            f"['loss', 'accuracy', 'val_loss'] (got {metrics!r} of type {type(metrics).__name__})"
        )
    names = list(metrics)
    for name in names:
        if not isinstance(name, str):
            raise ArgumentTypeError(f"MetricsTable: metrics must hold strings (got {name!r} of type {type(name).__name__})")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ArgumentError(f"MetricsTable: metrics must not repeat a name (got {duplicates} more than once)")
    return names


def _column_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a value column, or None if it can (needs the JVM)."""
    import jpy

    if name in FIXED_COLUMNS:
        return f"it is one of the fixed columns {list(FIXED_COLUMNS)}"
    try:
        jpy.get_type("io.deephaven.api.util.NameValidator").validateColumnName(name)
    except Exception as e:  # jpy raises a RuntimeError carrying the Java exception's message
        return f"it is not a valid Deephaven column name ({str(e).splitlines()[0]})"
    return None


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
    index. Needs a running Deephaven server (embedded or the one hosting the console).

    Args:
        every: ``"batch"`` (a row per step), ``"epoch"`` (a row per epoch end), or an int N (a row
            every N steps); an epoch's last step always gets a row.
        metrics: the Keras log names to keep as columns (e.g. ``["loss", "accuracy", "val_loss",
            "val_accuracy"]``), creating the table now; None (default) takes them from the first log.
        name: the name of the publisher, shown in engine logs.

    Raises:
        ValueError: ``every`` is not ``"batch"``, ``"epoch"`` or an int >= 1 (bools are not ints);
            ``metrics`` repeats a name, or holds one that is not a valid Deephaven column name or is
            a fixed column.
        TypeError: ``metrics`` is not None or a non-empty list of strings.
        ImportError: Keras or Deephaven cannot be imported (Deephaven needs a running JVM).

    Example:
        >>> metrics = MetricsTable(every="epoch", metrics=["loss", "val_loss"])
        >>> live = metrics.table                   # empty until fit logs its first epoch
        >>> model.fit(train, validation_data=valid, epochs=5, callbacks=[metrics])
        >>> live.where("EpochEnd").view(["Epoch", "loss", "val_loss"])
    """

    def __init__(self, every: str | int = "batch", *, metrics: Sequence[str] | None = None,
                 name: str = "dh_tf.MetricsTable") -> None:
        self.every = _every_arg(every)
        names = None if metrics is None else _metrics_arg(metrics)
        super().__init__()  # keras.callbacks.Callback.__init__ (NOTE [ Lazy Keras callbacks ])
        try:
            from deephaven.execution_context import get_exec_ctx
        except ImportError as e:
            raise MissingDependencyError("MetricsTable needs a running Deephaven server (start one with dh_tf.server.start_server)"
                              ) from e
        if names is not None:
            for column in names:
                problem = _column_name_problem(column)
                if problem is not None:
                    raise ArgumentError(f"MetricsTable: metrics name {column!r} cannot be a column: {problem}")
        self.name = name
        self.async_safe = self.every == "epoch"  # read by Keras: NOTE [ Publishing metrics ]
        self._exec_ctx = get_exec_ctx()
        self._update_graph = self._exec_ctx.update_graph.j_update_graph
        self._columns: list[str] | None = None
        self._table: Any = None
        self._publisher: Any = None
        self._queue: collections.deque[_Row] = collections.deque()
        self._pending: _Row | None = None  # the latest batch row: may become the epoch's row
        self._num_queued = 0
        self._num_published = 0
        self._force_publish = False
        self._last_publish = 0.0
        self._failure: BaseException | None = None
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
        """The ticking, append-only ``deephaven.table.Table`` of metrics.

        Raises:
            RuntimeError: ``metrics`` was None and nothing has been logged yet (NOTE [ Metrics table
                schema ]).
        """
        if self._table is None:
            raise UsageError(
                "MetricsTable: the table is created at the first logged step, since the Keras log names are "
                "not known before; pass metrics=[...] (e.g. ['loss', 'val_loss']) to create it up front"
            )
        return self._table

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
        self._force_publish = True
        self._update_graph.requestRefresh()

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
        if self._table is None:
            return True
        self._force_publish = True
        self._update_graph.requestRefresh()
        if self._update_graph.exclusiveLock().isHeldByCurrentThread() or (
            self._update_graph.sharedLock().isHeldByCurrentThread()
        ):
            return False  # e.g. a console command: the table ticks when the command ends (NOTE [ Console lock ])
        deadline = time.monotonic() + timeout_s
        while self._table.size < self._num_queued and self._failure is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self._failure is not None:
            warnings.warn(f"MetricsTable: publishing rows failed: {self._failure!r}", RuntimeWarning, stacklevel=2)
        return self._table.size >= self._num_queued

    # Rows.

    def _rows_now(self) -> int | None:
        """Training rows seen so far (NOTE [ Metrics table rows ]), on the training thread."""
        tracker = getattr(self.model, "_loss_tracker", None)
        if tracker is None or self._rows_before is None:
            return None
        count = float(np.asarray(tracker.count))
        if count <= 0:  # a train_step that does not feed Keras's loss tracker
            return None
        return self._rows_before + int(round(count))

    def _new_row(self, logs: Mapping[str, Any], time_ns: int, rows: int | None, epoch_end: bool) -> _Row:
        if self._columns is None:
            self._create_table(self._columns_from(logs))
        start_ns, start_rows = self._epoch_start
        rows_per_sec = None
        if rows is not None and start_rows is not None and time_ns > start_ns:
            rows_per_sec = (rows - start_rows) / ((time_ns - start_ns) / 1e9)
        self._epoch_start = (time_ns, rows)
        step = self._steps_before + self._steps_in_epoch
        return _Row(time_ns, self._epoch, step, rows, rows_per_sec, epoch_end, self._values(logs))

    def _values(self, logs: Mapping[str, Any]) -> dict[str, float]:
        assert self._columns is not None  # set by _new_row before any row exists
        values = {}
        for key, value in logs.items():
            if key not in self._columns:
                self._ignore(key, "it is not one of the table's columns " + str(self._columns))
                continue
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                self._ignore(key, f"its value is not a scalar ({type(value).__name__})")
        return values

    def _ignore(self, key: str, reason: str) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            warnings.warn(f"MetricsTable: ignoring the Keras log {key!r}: {reason}", UserWarning, stacklevel=3)

    def _columns_from(self, logs: Mapping[str, Any]) -> list[str]:
        names = list(logs)
        names += [f"val_{name}" for name in names if not name.startswith("val_") and f"val_{name}" not in logs]
        train = [name for name in names if not name.startswith("val_")]
        columns = []
        for name in train + [name for name in names if name.startswith("val_")]:
            problem = _column_name_problem(name)
            if problem is None:
                columns.append(name)
            else:
                self._ignore(name, problem)
        return columns

    # Publishing: NOTE [ Publishing metrics ].

    def _create_table(self, columns: list[str]) -> None:
        from deephaven import dtypes
        from deephaven.stream import blink_to_append_only
        from deephaven.stream.table_publisher import table_publisher

        definition = {
            "Time": dtypes.Instant,
            "Epoch": dtypes.int32,
            "Step": dtypes.int64,
            "Rows": dtypes.int64,
            "RowsPerSec": dtypes.double,
            "EpochEnd": dtypes.bool_,
            **dict.fromkeys(columns, dtypes.double),
        }
        with self._exec_ctx:
            blink, self._publisher = table_publisher(self.name, definition, on_flush_callback=self._on_flush)
            self._table = blink_to_append_only(blink)
        self._columns = columns

    def _enqueue(self, row: _Row) -> None:
        self._queue.append(row)  # deque.append: safe against the update graph's popleft
        self._num_queued += 1

    def _on_flush(self, publisher: Any) -> None:
        """Called by the update graph at the start of each cycle, on its thread."""
        if not self._queue:
            return
        now = time.monotonic()
        if not self._force_publish and now - self._last_publish < PUBLISH_INTERVAL_S:
            return
        self._force_publish = False
        self._last_publish = now
        rows = []
        while self._queue:
            rows.append(self._queue.popleft())
        try:
            with self._exec_ctx:
                publisher.add(self._chunk(rows))
        except Exception as e:  # an exception must not escape into the update graph
            self._failure = e

    def _chunk(self, rows: list[_Row]) -> Any:
        """A static table of ``rows`` with the publisher's columns."""
        from deephaven import new_table
        from deephaven.column import bool_col, datetime_col, double_col, int_col, long_col
        from deephaven.constants import NULL_DOUBLE, NULL_LONG

        assert self._columns is not None
        n = len(rows)
        rows_col = np.fromiter((NULL_LONG if r.rows is None else r.rows for r in rows), np.int64, n)
        speed = np.fromiter((NULL_DOUBLE if r.rows_per_sec is None else r.rows_per_sec for r in rows), np.float64, n)
        value_cols = []
        for column in self._columns:
            # A missing value is null; a NaN Keras logged stays NaN (NOTE [ Metrics table schema ]).
            values = np.fromiter((r.values.get(column, NULL_DOUBLE) for r in rows), np.float64, n)
            value_cols.append(double_col(column, values))
        return new_table([
            datetime_col("Time", np.fromiter((r.time_ns for r in rows), np.int64, n)),
            int_col("Epoch", np.fromiter((r.epoch for r in rows), np.int32, n)),
            long_col("Step", np.fromiter((r.step for r in rows), np.int64, n)),
            long_col("Rows", rows_col),
            double_col("RowsPerSec", speed),
            bool_col("EpochEnd", [r.epoch_end for r in rows]),
            *value_cols,
        ])
