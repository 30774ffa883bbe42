"""Live scoring: a ticking table of a model's predictions for each new row of a live table.

NOTE [ Live scoring ]
:func:`predict_follow` follows the input table (NOTE [ Follow mode ] in ``live/follow.py``:
append-only, add-only or blink), scores each batch of new rows on one daemon thread
(``dh_tf-predict-follow``) with the scoring loop and output spec ``predict_table`` uses
(``scoring.py``, ``output_spec.py``), and adds the predictions, next to the ``keep`` columns of those
rows, to a blink table made by ``table_publisher`` (the live sink of ``sinks.py``); the result is
``blink_to_append_only`` of it, so it keeps every prediction (``.blink`` is the blink table alone).
A batch is scored when it is full or when its oldest row has waited ``max_wait`` seconds, so a
row's prediction appears within ``max_wait`` plus the time to score one batch plus one update
cycle. Rows are scored in arrival order; the output's row ``i`` is the ``i``-th row scored. Memory
is bounded by the follower's page queue. ``stop()`` waits for the scoring thread at most
``timeout_s``: a model call that never returns cannot hang it, and a batch scored after ``stop()``
is never published.

NOTE [ Live output schema ] (``Scorer.probe`` in ``scoring.py``)
A live table's columns are fixed when it is made, before any row is scored, so the model is called
once on a batch of zero rows (a Keras model directly, ``model(x, training=False)``): its outputs
give the result columns' types (NOTE [ Output column types ] in ``output_spec.py``) and ``output`` is
checked against them, in the caller's thread. A callable that raises on zero rows gets double result
columns (the widths ``output`` names), and its later outputs are cast to double.

NOTE [ Live kept columns ]
Kept columns are read with the features, by the follower, so they must be types it reads or can be
given as one: byte, short, int, long, float, double and Boolean directly, Instant as its int64
nanoseconds (a DQL column ``epochNanos(col)`` of an ``update_view`` on the input, made, followed and
released in one liveness scope when scoring stops); a column that is also a feature is read through such a view column too, so its
nulls follow the kept column's policy, not the features'. Nulls are kept (read with the column's
null sentinel as the fill value); a NaN stays NaN. Other types (String, char, dates, arrays) are
refused with an ``ArgumentTypeError`` naming the column, its type and the allowed types: keep a key
column and join the rest (``live.table.natural_join(other, on="Id")``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.checks import checked_keywords, int_arg, seconds_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError
from dh_tf.live.follow import DEFAULT_PREFETCH, Follower
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.options import pick
from dh_tf.reading.padding import PadTo
from dh_tf.sources.column_types import COLUMN_KINDS
from dh_tf.sources.engine import check_table
from dh_tf.sources.remote import RemoteSource, release_export
from dh_tf.sources.remote_follow import DEFAULT_INTERVAL_S, RemoteFollowSource
from dh_tf.write import engine_write
from dh_tf.write.output_spec import DEFAULT_OUTPUT, Outputs, OutputSpec, parse_keep
from dh_tf.write.remote_sink import RemoteLiveSink, bind_as_arg, call, is_remote
from dh_tf.write.scoring import Scorer, cast_features, empty_features, feature_columns, make_predictor, num_rows
from dh_tf.write.sinks import COLUMN_TYPE_OF_DTYPE, LiveSink

THREAD_NAME = "dh_tf-predict-follow"
STOP_TIMEOUT_S = 10.0
"""How long ``stop()`` waits for the scoring thread by default (NOTE [ Live scoring ])."""
KEEP_TYPES = ("byte", "short", "int", "long", "float", "double", "java.lang.Boolean", "java.time.Instant")
"""Column types ``keep`` takes (NOTE [ Live kept columns ])."""
_WHERE = "predict_follow"
_INSTANT = "java.time.Instant"


NOT_FOLLOW_OPTIONS = {
    "label": "the kept columns are keep=",
    "sample_weight": "the kept columns are keep=",
    "label_dtype": "the kept columns are keep=",
}
"""``dh_tf.follow`` options that do not apply to live scoring (-> why); the others are keyword parameters."""
FOLLOWING = ("start", "max_rows", "max_batches", "prefetch", "page_rows", "on_overflow", "nulls", "pad_to", "padding",
             "truncating", "pad_value")
"""The ``dh_tf.follow`` options predict_follow passes on as they are (its ``batch_size``, ``max_wait``, ``dtype``
and ``interval_s`` are its own)."""


@checked_keywords(_WHERE, renamed={"queue_pages": "prefetch"}, refused=NOT_FOLLOW_OPTIONS)
def predict_follow(
    model: Any,
    table: Any,
    features: ColumnSpec,
    *,
    keep: str | Sequence[str] | None = None,
    output: OutputSpec = DEFAULT_OUTPUT,
    batch_size: int = 256,
    max_wait: float | None = 0.5,
    dtype: Any = "float32",
    bind_as: str | None = None,
    start: str = "now",
    max_rows: int | None = None,
    max_batches: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
    page_rows: int | None = None,
    on_overflow: str = "drop",
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
    interval_s: float | None = None,
) -> LivePredictions:
    """Scores every new row of a live table with ``model``, into a ticking append-only table.

    The same model and features give the same result columns and types as
    :func:`~dh_tf.write.predict_table.predict_table`.

    Args:
        model: a Keras model (``predict_on_batch``) or any callable ``f(x)`` returning one array, a
            list/tuple or a dict of arrays, each ``[rows]`` or ``[rows, k]``.
        table: a live append-only, add-only or blink table (see :func:`dh_tf.follow`), or a remote
            append-only ``pydeephaven`` table (or a ``RemoteFollowSource`` of one): the predictions
            then tick in an input table on that server (NOTE [ Remote write-back ] in ``remote_sink.py``).
        features: the feature spec, as ``follow``.
        keep: input columns copied next to the predictions (ids, timestamps), with their types:
            numeric, Boolean or Instant (NOTE [ Live kept columns ]).
        output: as ``predict_table``: one name (numbered for a multi-output model: ``Prediction0``,
            ``Prediction1``, ..., NOTE [ Numbered outputs ] in ``output_spec.py``), a list of names for
            ``[rows, k]``, or a dict of model output name -> name(s) for a multi-output model.
        batch_size: rows scored at once, at most. The default, 256, sits between training's 32 and
            ``predict_table``'s 4096: a live batch waits to fill (or ``max_wait``), so a smaller
            batch keeps latency low while each model call still scores many rows.
        max_wait: seconds a row waits for its batch to fill before a partial batch is scored; None:
            full batches only. The default, 0.5, is not ``follow``'s None: a scorer's rows must reach
            the result table even when the input is slow.
        dtype: the feature dtype handed to the model.
        bind_as: remote tables only: also bind the result table under this name in the server's scope.
        start, max_rows, max_batches, prefetch, page_rows, on_overflow, nulls: as :func:`dh_tf.follow`,
            with its defaults.
        pad_to, padding, truncating, pad_value: as :func:`dh_tf.follow`, with its defaults. Its ``label``,
            ``sample_weight`` and ``label_dtype`` do not apply (:data:`NOT_FOLLOW_OPTIONS`; the kept
            columns are ``keep``).
        interval_s: remote append-only tables only, as :func:`dh_tf.follow`: seconds between size polls;
            None: 0.5 s (or the ``RemoteFollowSource``'s own).

    Returns:
        A :class:`LivePredictions`: ``.table`` ticks (a ``pydeephaven`` input table for a remote
        input); call ``.stop()`` (or ``.close()``) when done.

    Raises:
        ArgumentTypeError: as ``follow``; an unknown keyword (naming the closest ones); ``model`` is neither a
            Keras model nor callable; a keep column's type is not one of :data:`KEEP_TYPES`; a model
            output is not numeric.
        ArgumentError: as ``follow``; ``keep`` names a missing column or an output column;
            ``output`` repeats a name, is not a valid column name, or does not fit the model's
            outputs (NOTE [ Live output schema ]); ``bind_as`` for an embedded table; ``label``,
            ``sample_weight`` or ``label_dtype`` given; ``interval_s`` given for an embedded table or
            with a ``RemoteFollowSource``.
        RemoteWriteError: the server refused the result table or its binding.

    Example:
        >>> live = predict_follow(model, ticks, ["Price", "Size"], keep=["Id", "Timestamp"], max_wait=0.2)
        >>> scored = live.table  # Id, Timestamp, Prediction; grows as ticks grows
        >>> live.stop()
    """
    follow_options = pick(locals(), FOLLOWING)
    if isinstance(table, RemoteFollowSource):
        if interval_s is not None:
            raise ArgumentError(
                f"{_WHERE}: interval_s must be None with a RemoteFollowSource, which has its own (got "
                f"interval_s={interval_s!r}); pass the pydeephaven table, or set it on the source"
            )
        interval_s, table = table.interval_s, table.table
    remote = is_remote(table)
    if remote:
        types = RemoteSource(table, _WHERE).column_types  # checks the table and its Session
        interval_s = DEFAULT_INTERVAL_S if interval_s is None else interval_s
    elif interval_s is not None:
        raise ArgumentError(
            f"{_WHERE}: interval_s is for remote append-only (pydeephaven) tables, which are polled (got "
            f"interval_s={interval_s!r} for an embedded table)"
        )
    else:
        check_table(table, _WHERE)
        types = {column.name: column.data_type.j_name for column in table.columns}
    bind_as = bind_as_arg(bind_as, _WHERE)
    if bind_as is not None and not remote:
        raise ArgumentError(
            f"{_WHERE}: bind_as is for remote (pydeephaven) tables (got {bind_as!r} for an embedded table); "
            "in the server, assign live.table to a variable"
        )
    predictor = make_predictor(model, _WHERE)
    outputs = Outputs(output, _WHERE)
    keep = parse_keep(keep, list(types), outputs.names, _WHERE)
    outputs.keep_apart(keep)
    batch_size = int_arg(batch_size, "batch_size", _WHERE, minimum=1)
    model_dtype = _dtype_arg(dtype)
    if not remote and not engine_write.available():
        raise UsageError(f"{_WHERE}: needs the engine write path (Arrow's MemoryUtil), which does not work here")
    predictor.check_static(outputs)
    kept = _KeptColumns(table, features, keep, types, interval_s)
    try:
        if kept.names:
            follow_options["nulls"] = kept.nulls(nulls, feature_columns(features))
        # Kept float columns are read as float64, exactly; features are cast to ``dtype`` for the model.
        with kept.scope():
            follower = Follower(kept.table, features, kept.label, batch_size=batch_size, max_wait=max_wait,
                                dtype="float64", where=_WHERE, **follow_options)
    except BaseException:
        kept.release()
        raise
    try:
        scorer = Scorer(predictor, outputs, batch_size)
        scorer.fix_dtypes(scorer.probe(cast_features(empty_features(follower.layout), model_dtype)))
        assert scorer.dtypes is not None
        result_types = {**kept.types, **{name: COLUMN_TYPE_OF_DTYPE[d.name] for name, d in scorer.dtypes.items()}}
        if remote:
            sink: Any = RemoteLiveSink(table.session, result_types, _WHERE, bind_as=bind_as)
        else:
            from deephaven.execution_context import get_exec_ctx

            sink = LiveSink("dh_tf.write.predict_follow", result_types, get_exec_ctx())
        return LivePredictions(scorer, follower, kept, model_dtype, sink)
    except BaseException:
        follower.stop()
        kept.release()
        raise


def _dtype_arg(dtype: Any) -> np.dtype:
    try:
        result = np.dtype(dtype)
    except TypeError:
        result = None
    if result is None or result.kind not in "fiu":
        raise ArgumentTypeError(f"{_WHERE}: dtype must be a numeric numpy dtype (got {dtype!r})")
    return result


class _KeptColumns:
    """How the ``keep`` columns are read by the follower and written back (NOTE [ Live kept columns ])."""

    def __init__(
        self, table: Any, features: ColumnSpec, keep: list[str], types: Mapping[str, str], interval_s: float | None
    ) -> None:
        for name in keep:
            if types[name] not in KEEP_TYPES:
                raise ArgumentTypeError(
                    f"{_WHERE}: keep column {name!r} has type {types[name]}, which a live scorer cannot keep; "
                    f"allowed types: {', '.join(KEEP_TYPES)} (keep a key column and join the others)"
                )
        self.names = keep
        self.types = {name: types[name] for name in keep}
        self.table = table
        self._read_as = dict(zip(keep, keep))
        self._scope: Any = None
        self._view: Any = None  # a remote view, released by release()
        self._lock = threading.Lock()
        in_features = set(feature_columns(features))
        formulas = []
        for index, name in enumerate(keep):
            if types[name] == _INSTANT or name in in_features:
                alias = f"__dh_tf_keep_{index}"
                while alias in types:
                    alias += "_"
                formulas.append(f"{alias} = epochNanos({name})" if types[name] == _INSTANT else f"{alias} = {name}")
                self._read_as[name] = alias
        if formulas and interval_s is not None:
            self.table = self._view = call(_WHERE, table.session, "making the kept columns' view",
                                           lambda: table.update_view(formulas))
        elif formulas:
            from deephaven.liveness_scope import LivenessScope

            self._scope = LivenessScope()
            with self._scope.open():
                self.table = table.update_view(formulas)
        if interval_s is not None:  # a remote table, followed by polling (NOTE [ Remote follow ])
            try:
                self.table = RemoteFollowSource(self.table, _WHERE, interval_s=interval_s)
            except BaseException:
                self.release()
                raise

    @property
    def label(self) -> dict[str, str] | None:
        """The follower's label spec: one field per read column, so each keeps its own dtype."""
        return {column: column for column in self._read_as.values()} or None

    def nulls(self, nulls: Any, features: list[str]) -> dict[str, Any]:
        """The follower's null policies: the user's for the features, the null sentinel for kept columns."""
        policies = dict(nulls) if isinstance(nulls, Mapping) else dict.fromkeys(features, nulls)
        for name, column in self._read_as.items():
            policies[column] = COLUMN_KINDS["long" if self.types[name] == _INSTANT else self.types[name]].null_value
        return policies

    def values(self, read: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Kept column name -> values, from the follower's label dict."""
        return {name: read[column] for name, column in self._read_as.items()}

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Opens the view's liveness scope, if any: what the follower makes to read it is released with it."""
        return contextlib.nullcontext() if self._scope is None else self._scope.open()

    def release(self) -> None:
        """Releases the view on the input (its listener goes); safe to call twice, from any thread."""
        with self._lock:
            scope, self._scope = self._scope, None
            view, self._view = self._view, None
        if scope is not None:
            scope.release()
        release_export(view)


class LivePredictions:
    """The ticking predictions of :func:`predict_follow`. ``stop()`` / ``close()``: any thread, any number of times.

    Attributes: ``table`` (append-only, every prediction), ``blink`` (the blink table it is built
    from), ``scored_rows``, ``error`` (what stopped scoring, or None), ``follower``. The scoring
    thread holds this object until it ends, so drop it only after ``stop()``.
    """

    def __init__(self, scorer: Scorer, follower: Follower, kept: _KeptColumns, dtype: np.dtype, sink: Any) -> None:
        self.follower = follower
        self.scored_rows = 0
        self.error: BaseException | None = None
        self._scorer = scorer
        self._kept = kept
        self._dtype = dtype
        self._sink = sink
        self.table = self._sink.table
        self.blink = self._sink.blink
        self._halt = threading.Event()
        self._lock = threading.Lock()  # a batch is published whole, never after stop()
        with kept.scope():
            self._batches = iter(follower)  # listening starts now
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = STOP_TIMEOUT_S) -> bool:
        """Stops scoring: the follower's listener is removed and the scoring thread told to end.

        Nothing is published after this returns (unless a remote add still in flight after
        ``timeout_s`` lands: then it returns False). Waits at most ``timeout_s`` seconds (None: no
        limit) for the scoring thread, which may be inside a model call or a remote add; it is a
        daemon thread and ends when that call returns.

        Returns:
            True if the scoring thread has ended, False if it is still in a model call.

        Raises:
            ArgumentError, ArgumentTypeError: ``timeout_s`` is not a number of seconds >= 0 or None.
        """
        timeout_s = seconds_arg(timeout_s, "timeout_s", "LivePredictions.stop")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        locked = self._lock.acquire(timeout=-1 if timeout_s is None else timeout_s)  # a batch being published
        self._halt.set()
        if locked:
            self._lock.release()
        self.follower.stop()
        self._kept.release()
        if self._thread is not threading.current_thread():
            self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    close = stop

    def __enter__(self) -> LivePredictions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            for batch in self._batches:
                if self._halt.is_set():
                    return
                x, read = (batch, {}) if not self._kept.names else batch
                columns = self._scorer.score(cast_features(x, self._dtype))
                with self._lock:
                    if self._halt.is_set():
                        return
                    self._sink.write(self.scored_rows, {**self._kept.values(read), **columns})
                    self.scored_rows += num_rows(x)
        except BaseException as error:
            self.error = error
            self._sink.fail(error)
        finally:
            self._batches.close()  # type: ignore[attr-defined]
            self._kept.release()
