"""Live scoring: a ticking table of a model's predictions for each new row of a live table.

NOTE [ Live scoring ]
:func:`predict_follow` follows the input table (NOTE [ Follow mode ] in follow_mode.py: append-only,
add-only or blink), scores each batch of new rows on one thread (``dh_tf-predict-follow``) and adds
the predictions, next to the ``keep`` columns of those rows, to a blink table made by
``table_publisher``; the result is ``blink_to_append_only`` of it, so it keeps every prediction
(use ``stream.blink`` for the blink table alone). A batch is scored when it is full or when its
oldest row has waited ``max_wait`` seconds, so a row's prediction appears within ``max_wait`` plus
the time to score one batch plus one update cycle. Rows are scored in arrival order; the output's
row ``i`` is the ``i``-th row scored. Memory is bounded by the follower's page queue.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.live.follow import Follower, follow
from dh_tf.reading.layout import ColumnSpec
from dh_tf.sources.column_types import COLUMN_KINDS

THREAD_NAME = "dh_tf-predict-follow"
_WHERE = "predict_follow"
_KEEP_TYPES = ("byte", "short", "int", "long", "float", "double")


def predict_follow(
    model: Any,
    table: Any,
    features: ColumnSpec,
    *,
    keep: str | Sequence[str] | None = None,
    output: str | Sequence[str] = "Prediction",
    batch_size: int = 256,
    max_wait: float | None = 0.5,
    dtype: Any = "float32",
    **follow_options: Any,
) -> LivePredictions:
    """Scores every new row of a live table with ``model``, into a ticking append-only table.

    Args:
        model: a Keras model (``predict_on_batch``) or any callable mapping a batch ``x`` to an array
            ``[rows]`` or ``[rows, k]``.
        table: a live append-only, add-only or blink table (see :func:`dh_tf.follow`).
        features: the feature spec, as ``follow``.
        keep: numeric input columns copied next to the predictions (e.g. an id), with their types.
        output: one column name (a ``[rows]`` or ``[rows, 1]`` output) or ``k`` names (``[rows, k]``).
        batch_size: rows scored at once, at most.
        max_wait: seconds a row waits for its batch to fill before a partial batch is scored; None:
            full batches only.
        dtype: the feature dtype handed to the model.
        follow_options: more ``follow`` options (``start``, ``queue_pages``, ``nulls``, ...).

    Returns:
        A :class:`LivePredictions`: ``.table`` ticks; call ``.stop()`` when done.

    Raises:
        TypeError, ValueError: as ``follow``; ``keep`` names a missing or non-numeric column;
            ``output`` is not a name or a list of distinct names, or clashes with ``keep``.

    Example:
        >>> live = predict_follow(model, ticks, ["Price", "Size"], keep="Id", max_wait=0.2)
        >>> scored = live.table  # Id, Prediction; grows as ticks grows
        >>> live.stop()
    """
    outputs = [output] if isinstance(output, str) else list(output) if isinstance(output, Sequence) else None
    if not outputs or not all(isinstance(name, str) and name for name in outputs) or len(set(outputs)) != len(outputs):
        raise ArgumentError(f"{_WHERE}: output must be a column name or a list of distinct names (got {output!r})")
    kept = [] if keep is None else [keep] if isinstance(keep, str) else list(keep)
    types = {column.name: column.data_type for column in getattr(table, "columns", [])}
    for name in kept:
        if not isinstance(name, str) or name not in types:
            raise ArgumentError(f"{_WHERE}: keep names unknown column {name!r}; the table has columns {list(types)}")
        if types[name].j_name not in _KEEP_TYPES:
            raise ArgumentTypeError(
                f"{_WHERE}: keep column {name!r} ({types[name].j_name}) must be numeric: one of {', '.join(_KEEP_TYPES)}"
            )
    clash = sorted(set(kept) & set(outputs))
    if clash:
        raise ArgumentError(f"{_WHERE}: output names clash with keep columns {clash}")
    for option in ("label", "sample_weight", "label_dtype"):
        if option in follow_options:
            raise ArgumentTypeError(f"{_WHERE}: got an unexpected option {option!r} (the kept columns are keep=)")
    follower = follow(
        table,
        features,
        {name: name for name in kept} if kept else None,
        batch_size=batch_size,
        max_wait=max_wait,
        dtype="float64",  # kept float columns stay exact; features are cast to ``dtype`` for the model
        **follow_options,
    )
    return LivePredictions(model, follower, kept, {name: types[name] for name in kept}, outputs, np.dtype(dtype))


class LivePredictions:
    """The ticking predictions of :func:`predict_follow`. ``stop()`` is safe from any thread, twice.

    Attributes: ``table`` (append-only, every prediction), ``blink`` (the blink table it is built
    from), ``scored_rows``, ``error`` (what stopped scoring, or None), ``follower``.
    """

    def __init__(
        self, model: Any, follower: Follower, keep: list[str], keep_types: dict[str, Any], outputs: list[str], dtype: np.dtype
    ) -> None:
        from deephaven import dtypes
        from deephaven.execution_context import get_exec_ctx
        from deephaven.stream import blink_to_append_only
        from deephaven.stream.table_publisher import table_publisher

        self.follower = follower
        self.scored_rows = 0
        self.error: BaseException | None = None
        self._model = model
        self._keep = keep
        self._keep_types = keep_types
        self._outputs = outputs
        self._dtype = dtype
        self._exec_ctx = get_exec_ctx()
        self._predict = getattr(model, "predict_on_batch", model)
        definition = {**keep_types, **dict.fromkeys(outputs, dtypes.double)}
        self.blink, self._publisher = table_publisher("dh_tf.write.predict_follow", definition)
        self.table = blink_to_append_only(self.blink)
        self._halt = threading.Event()
        self._batches = iter(follower)  # listening starts now
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops scoring: the follower's listener is removed and the scoring thread joined."""
        self._halt.set()
        self.follower.stop()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> LivePredictions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        from deephaven import dtypes, new_table
        from deephaven.column import InputColumn

        try:
            for batch in self._batches:
                if self._halt.is_set():
                    return
                x, kept = (batch, {}) if not self._keep else batch
                x = x.astype(self._dtype, copy=False) if isinstance(x, np.ndarray) else {
                    k: v.astype(self._dtype, copy=False) for k, v in x.items()
                }
                predictions = np.asarray(self._predict(x), dtype=np.float64)
                rows = len(next(iter(kept.values()))) if kept else len(predictions)
                predictions = predictions.reshape(rows, -1)
                if predictions.shape[1] != len(self._outputs):
                    raise ArgumentError(
                        f"{_WHERE}: the model gives {predictions.shape[1]} values per row but output names "
                        f"{len(self._outputs)} columns {self._outputs}"
                    )
                columns = [
                    InputColumn(
                        name=name,
                        data_type=self._keep_types[name],
                        input_data=np.ascontiguousarray(values, dtype=COLUMN_KINDS[self._keep_types[name].j_name].dtype),
                    )
                    for name, values in kept.items()
                ]
                columns += [
                    InputColumn(name=name, data_type=dtypes.double, input_data=np.ascontiguousarray(predictions[:, k]))
                    for k, name in enumerate(self._outputs)
                ]
                with self._exec_ctx:
                    self._publisher.add(new_table(columns))
                self.scored_rows += rows
        except BaseException as error:
            self.error = error
            self._publisher.publish_failure(error if isinstance(error, Exception) else RuntimeError(repr(error)))
        finally:
            self._batches.close()  # type: ignore[attr-defined]

