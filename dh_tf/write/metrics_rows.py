"""What a metrics table holds: its rows, its columns, and the checks of ``MetricsTable``'s arguments.

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
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.write.publisher import column_name_problem

FIXED_COLUMNS = ("Time", "Epoch", "Step", "Rows", "RowsPerSec", "EpochEnd")
COLUMN_TYPES = {"Time": "Instant", "Epoch": "int", "Step": "long", "Rows": "long", "RowsPerSec": "double",
                "EpochEnd": "Boolean"}
"""The fixed columns' types (``RowPublisher`` type names); every value column is a double."""
_EVERY_CHOICES = ("batch", "epoch")


@dataclass
class MetricsRow:
    """One row of the metrics table (NOTE [ Metrics table rows ])."""

    time_ns: int
    epoch: int
    step: int
    rows: int | None
    rows_per_sec: float | None
    epoch_end: bool
    values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The row as the publisher takes it (None: null)."""
        return {"Time": self.time_ns, "Epoch": self.epoch, "Step": self.step, "Rows": self.rows,
                "RowsPerSec": self.rows_per_sec, "EpochEnd": self.epoch_end, **self.values}


def every_arg(every: Any) -> str | int:
    """``every`` checked: "batch", "epoch" or an int >= 1 (bools are not ints).

    Raises:
        ArgumentError: anything else.
    """
    if isinstance(every, str) and every in _EVERY_CHOICES:
        return every
    if isinstance(every, numbers.Integral) and not isinstance(every, bool) and every >= 1:
        return int(every)
    raise ArgumentError(
        f"MetricsTable: every must be 'batch', 'epoch' or an int >= 1 (got {every!r} of type {type(every).__name__})"
    )


def metrics_arg(metrics: Any) -> list[str]:
    """``metrics`` checked: a non-empty list of distinct strings (validity as columns: :func:`value_column_problem`).

    Raises:
        ArgumentTypeError: not a non-empty list of strings.
        ArgumentError: a repeated name.
    """
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


def value_column_problem(name: str) -> str | None:
    """Why ``name`` cannot be a value column, or None if it can (needs the JVM)."""
    if name in FIXED_COLUMNS:
        return f"it is one of the fixed columns {list(FIXED_COLUMNS)}"
    return column_name_problem(name)


def columns_from(logs: Mapping[str, Any], ignore: Callable[[str, str], None]) -> list[str]:
    """The value columns for a table made at the first log (NOTE [ Metrics table schema ]).

    ``ignore(name, reason)`` is told about each name that cannot be a column.
    """
    names = list(logs)
    names += [f"val_{name}" for name in names if not name.startswith("val_") and f"val_{name}" not in logs]
    train = [name for name in names if not name.startswith("val_")]
    columns = []
    for name in train + [name for name in names if name.startswith("val_")]:
        problem = value_column_problem(name)
        if problem is None:
            columns.append(name)
        else:
            ignore(name, problem)
    return columns


def values_of(logs: Mapping[str, Any], columns: list[str], ignore: Callable[[str, str], None]) -> dict[str, float]:
    """The log values that are columns, as floats; ``ignore(name, reason)`` is told about the rest."""
    values = {}
    for key, value in logs.items():
        if key not in columns:
            ignore(key, "it is not one of the table's columns " + str(columns))
            continue
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            ignore(key, f"its value is not a scalar ({type(value).__name__})")
    return values
