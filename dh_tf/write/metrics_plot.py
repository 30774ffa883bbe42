"""A ticking Deephaven figure of a metrics table: loss and each metric by ``Step``."""

from __future__ import annotations

from typing import Any

from dh_tf.errors import ArgumentError, UsageError
from dh_tf.write.metrics_rows import FIXED_COLUMNS
from dh_tf.write.metrics_table import MetricsTable
from dh_tf.write.remote_sink import is_remote


def plot_metrics(metrics: MetricsTable | Any) -> Any:
    """A Deephaven figure of the loss and every metric by ``Step``, one chart per metric.

    Each chart shows a train column (all its rows) and its ``val_`` column (the epoch-end rows that
    have it). The figure follows the table as it ticks; show it in the IDE by assigning it to a
    variable in the console.

    Args:
        metrics: a :class:`MetricsTable`, or its table (or a table derived from it keeping ``Step``).

    Returns:
        a ``deephaven.plot.figure.Figure``.

    Raises:
        RuntimeError: a MetricsTable whose table does not exist yet (see :attr:`MetricsTable.table`);
            a remote one (``session=``) or a pydeephaven table: a figure is made inside the server, so
            call ``plot_metrics`` in the IDE on the bound table (docs/guides/write-back.md, "Results back
            from a remote trainer").
        ValueError: the table has no ``Step`` column or no metric column (a double column other than
            the fixed ones).

    Example:
        >>> fig = plot_metrics(metrics)   # in the IDE console: the figure opens and ticks
    """
    table = metrics.table if isinstance(metrics, MetricsTable) else metrics
    if is_remote(table):
        raise UsageError(
            "plot_metrics: got a pydeephaven table; a Deephaven figure is made inside the server: bind the metrics "
            "(MetricsTable(session=..., bind_as='train_metrics')) and call dh_tf.plot_metrics(train_metrics) in the "
            "IDE, or plot it there with plain Deephaven plotting (docs/guides/write-back.md: 'Results back from a remote "
            "trainer')"
        )
    from deephaven import dtypes
    from deephaven.plot.figure import Figure

    types = {column.name: column.data_type for column in table.columns}
    names = [name for name, dtype in types.items() if name not in FIXED_COLUMNS and dtype == dtypes.double]
    if "Step" not in types or not names:
        raise ArgumentError(
            "plot_metrics: the table must have a Step column and at least one metric (a double column other "
            f"than {list(FIXED_COLUMNS)}) (got columns {list(types)})"
        )
    charts: dict[str, list[str]] = {}
    for name in names:
        base = name[len("val_"):] if name.startswith("val_") and name[len("val_"):] in types else name
        charts.setdefault(base, []).append(name)
    figure = Figure(rows=len(charts), cols=1)
    for index, (title, series) in enumerate(charts.items()):
        figure = figure.new_chart(row=index, col=0).chart_title(title=title)
        for name in series:
            source = table.where(f"!isNull({name})") if name.startswith("val_") else table
            figure = figure.plot_xy(series_name=name, t=source, x="Step", y=name)
        figure = figure.x_axis(label="Step")
    return figure
