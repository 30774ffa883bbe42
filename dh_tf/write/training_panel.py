"""The IDE panel of a background ``fit``: live learning curves, progress, ETA, rows/s, the error, a Stop button.

Built with ``deephaven.ui`` and ``deephaven.plot.express`` (the ``deephaven-plugin-ui`` and
``deephaven-plugin-plotly-express`` plugins, pip extra ``dh-tf[ide]``), imported when a panel is
made: importing dh_tf needs neither.

NOTE [ Training panel updates ]
Two sources feed the panel, each on its own clock. The learning curves and rows/s come from the
:class:`MetricsTable`'s ticking table (plotly-express charts and a one-row subscription, updated by
the engine as the table ticks). The step counter, ETA and state come from
:meth:`TrainingRun.progress`, polled every ``POLL_S`` by one ``dh_tf-panel`` thread per open panel
(started when the panel mounts, ended when it unmounts and after the run ends), which sets the
component's state only when something changed: ``deephaven.ui`` state setters may be called from
any thread and re-render on its render thread. The Stop button calls :meth:`TrainingRun.stop`
(NOTE [ Stopping a background fit ] in ``tf/background.py``).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Any

from dh_tf.errors import ArgumentTypeError, MissingDependencyError, UsageError
from dh_tf.tf.background import FitProgress, TrainingRun
from dh_tf.write.metrics_table import MetricsTable
from dh_tf.write.remote_sink import is_remote

__all__ = ["PANEL_THREAD_NAME", "POLL_S", "training_panel"]

POLL_S = 0.5
PANEL_THREAD_NAME = "dh_tf-panel"
IDE_INSTALL = (
    "pip install 'dh-tf[ide]' (deephaven-plugin-ui and deephaven-plugin-plotly-express) into the server's "
    "Python, then restart the server"
)


def training_panel(run: TrainingRun, metrics: MetricsTable, *, title: str = "Training") -> Any:
    """A ``deephaven.ui`` panel that shows a background ``fit`` as it trains, and stops it.

    It shows the learning curves (each metric by ``Step``, and at each epoch's end with the
    ``val_`` metrics), the epoch and step against the known number of steps, the ETA, the rows per
    second, the error if ``fit`` failed, and a Stop button that ends ``fit`` at the next batch end
    (the model and the metrics table stay usable). Assign it to a variable in the IDE console and
    the panel opens; how it updates: NOTE [ Training panel updates ].

    Args:
        run: what :func:`fit_in_background` returned.
        metrics: the :class:`MetricsTable` among that ``fit``'s callbacks (made without ``session``).
            Without ``metrics=[...]`` its table exists only after the first logged step: the curves
            appear then.
        title: the panel's title.

    Returns:
        a ``deephaven.ui`` element (the panel).

    Raises:
        TypeError: ``run`` is not a :class:`TrainingRun` or ``metrics`` not a :class:`MetricsTable`.
        RuntimeError: ``metrics`` publishes to a remote server (``session=``) and its table exists:
            a panel is made in the server that holds the table.
        ImportError: no running Deephaven server in this process, or the ``deephaven.ui`` /
            plotly-express plugins are not installed (the message says ``pip install 'dh-tf[ide]'``).

    Example:
        >>> metrics = dh_tf.MetricsTable(every=10, metrics=["loss", "mae"])
        >>> training = dh_tf.fit_in_background(model, ds, epochs=5, callbacks=[metrics])
        >>> panel = dh_tf.training_panel(training, metrics)   # in the IDE console: the panel opens
    """
    if not isinstance(run, TrainingRun):
        raise ArgumentTypeError(
            f"training_panel: run must be what dh_tf.fit_in_background returned (a TrainingRun) "
            f"(got {type(run).__name__})"
        )
    if not isinstance(metrics, MetricsTable):
        raise ArgumentTypeError(
            f"training_panel: metrics must be a dh_tf.MetricsTable (got {type(metrics).__name__})"
        )
    if metrics.columns is not None and is_remote(metrics.table):
        raise UsageError(
            "training_panel: metrics publishes to a remote server (session=); make the panel in that server's IDE"
        )
    return _panel_component()(run, metrics, title)


@dataclass(frozen=True)
class _View:
    """What the panel shows of the run, besides the metrics table."""

    progress: FitProgress
    has_table: bool
    done: bool = False
    error: str | None = None
    cancelled: bool = False


def _view_of(run: TrainingRun, metrics: MetricsTable) -> _View:
    progress = run.progress()  # before done(): a run seen done has its final progress
    has_table = metrics.columns is not None
    if not run.done():
        return _View(progress, has_table)
    if run.cancelled():
        return _View(progress, has_table, done=True, cancelled=True)
    error = run.exception(timeout=0)
    return _View(progress, has_table, done=True,
                 error=None if error is None else f"{type(error).__name__}: {error}")


def status_line(view: _View) -> str:
    """The panel's one-line state: training, stopping, stopped, finished, failed or cancelled."""
    p = view.progress
    at = f"epoch {p.epoch + 1}/{_or_unknown(p.epochs)}, step {p.step}/{_or_unknown(p.steps_per_epoch)}"
    if view.cancelled:
        return "Cancelled before training began"
    if view.error is not None:
        return f"Failed at {at}"
    if not view.done:
        if p.epochs is None:
            return "Starting"
        return f"Stopping after this batch ({at})" if p.stop_requested else f"Training: {at}"
    if p.steps_total is not None and p.steps_done >= p.steps_total:
        return f"Finished: {p.steps_done} steps"
    if p.stop_requested:
        return f"Stopped at {at} (Stop pressed or run.stop()); the model and the metrics table are usable"
    return f"Ended early at {at} (a callback stopped it)"


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``; under a minute ``"42 s"``; hours as ``"2 h 05 min"``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _number(value: Any) -> float | None:
    """A table cell as a float; None for a Deephaven null (NaN, ``pd.NA``, None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _poll(run: TrainingRun, metrics: MetricsTable, set_view: Any) -> Any:
    """Starts the ``dh_tf-panel`` thread (NOTE [ Training panel updates ]); returns the function that ends it."""
    closed = threading.Event()

    def loop() -> None:
        last = None
        while True:
            view = _view_of(run, metrics)
            if view != last:
                set_view(view)
                last = view
            if view.done or closed.wait(POLL_S):
                return

    threading.Thread(target=loop, name=PANEL_THREAD_NAME, daemon=True).start()
    return closed.set


def _plugins() -> tuple[Any, Any]:
    """``deephaven.ui`` and ``deephaven.plot.express``, imported now.

    Raises:
        MissingDependencyError: no Deephaven server runs here, or the plugins are not installed.
    """
    try:
        import deephaven  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            "training_panel needs a running Deephaven server in this process (the IDE's, or "
            "dh_tf.server.start_server)"
        ) from e
    try:
        import deephaven.plot.express as dx
        import deephaven.ui as ui
    except ImportError as e:
        raise MissingDependencyError(f"training_panel needs the deephaven.ui plugins: {IDE_INSTALL}") from e
    return ui, dx


@functools.cache
def _panel_component() -> Any:
    """The ``@ui.component`` of the panel, made once (its decorator needs ``deephaven.ui`` imported)."""
    ui, dx = _plugins()

    @ui.component
    def learning_curves(table: Any, columns: tuple[str, ...]) -> Any:
        trained = [name for name in columns if not name.startswith("val_")]
        by_step = ui.use_memo(lambda: dx.line(table, x="Step", y=trained, title="By step"), [table, columns])
        by_epoch = ui.use_memo(  # only with val_ metrics, which only epoch-end rows have
            lambda: None if len(trained) == len(columns) else dx.line(
                table.where("EpochEnd"), x="Step", y=list(columns), markers=True, title="At each epoch's end"),
            [table, columns],
        )
        charts = [by_step] if by_epoch is None else [by_step, by_epoch]
        return ui.flex(*charts, direction="row", flex_grow=1, width="100%", min_height="size-3600")

    @ui.component
    def rows_per_sec(table: Any) -> Any:
        last = ui.use_memo(lambda: table.tail(1).view(["Rows", "RowsPerSec"]), [table])
        row = ui.use_row_data(last) or {}
        rows, rate = _number(row.get("Rows")), _number(row.get("RowsPerSec"))
        return ui.text(
            f"Rows: {'?' if rows is None else f'{rows:,.0f}'} · "
            f"{'?' if rate is None else f'{rate:,.0f}'} rows/s"
        )

    @ui.component
    def training_panel_view(run: TrainingRun, metrics: MetricsTable, title: str) -> Any:
        view, set_view = ui.use_state(lambda: _view_of(run, metrics))
        ui.use_effect(lambda: _poll(run, metrics, set_view), [run, metrics])
        stop = ui.use_callback(lambda _event: run.stop(), [run])
        p = view.progress
        eta = p.eta_s
        steps = f"Steps: {p.steps_done}" + ("" if p.steps_total is None else f" / {p.steps_total}")
        status = [
            ui.heading(status_line(view), level=4, margin=0),
            ui.progress_bar(
                label="Progress", show_value_label=p.steps_total is not None, value=p.steps_done,
                max_value=max(p.steps_total or 1, 1), is_indeterminate=p.steps_total is None and not view.done,
                width="100%",
            ),
            ui.flex(
                ui.text(steps),
                ui.text("ETA: " + ("-" if view.done or eta is None else format_seconds(eta))),
                rows_per_sec(metrics.table) if view.has_table else ui.text("Rows: ?"),
                ui.button("Stop", variant="negative", is_disabled=view.done or p.stop_requested,
                          on_press=stop),
                direction="row", gap="size-300", align_items="center",
            ),
        ]
        if view.error is not None:
            status.append(ui.inline_alert("Training failed", view.error, variant="negative"))
        curves = (learning_curves(metrics.table, tuple(metrics.columns or ())) if view.has_table
                  else ui.text("The learning curves appear at the first logged step."))
        return ui.panel(
            ui.flex(*status, direction="column", gap="size-100", flex_shrink=0, width="100%"),
            curves, title=title, align_items="stretch",
        )

    return training_panel_view
