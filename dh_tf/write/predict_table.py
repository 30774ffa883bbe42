"""Predictions as a table: score a Deephaven table with a model, row ``i`` of the result is row ``i`` of the input.

Features are read with :class:`~dh_tf.reading.loader.TableLoader` in table order, in large groups of whole
batches; the model scores one group at a time; its outputs become columns of a new table, next to
the ``keep`` columns of the input (keys, timestamps, any type). The result is built in the heap
(NOTE [ Engine internals for writing ] in ``engine_write.py``), or, with ``directory=``, written page by
page as Parquet files into one directory and opened as one table, so scoring a table bigger than
the heap needs bounded memory.

NOTE [ Pairing kept columns with predictions ]
Predictions are arrays in row-position order; kept columns are paired with them by position, not
by row key (filtered and Parquet-backed tables have sparse keys). The kept columns are copied once
with ``view(keep).snapshot()`` and flattened. Measured on 2.7M rows x (long, String, Instant) of a
Parquet table: ``snapshot`` 0.25-0.7 s whatever the filter; ``select`` 0.1 s on a block-shaped
filter but 5-7 s on a filter that keeps 2 rows of every 3 (a fragmented row set); a lazy
``flatten`` alone costs nothing to build but every later read goes through the redirection
(~1.3 M rows/s per column on that fragmented row set).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dh_tf.checks import bool_arg, checked_keywords, choice_arg, int_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import TableLoader
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.options import LOADER_OPTIONS, pick
from dh_tf.reading.padding import PadTo
from dh_tf.sources.engine import check_table
from dh_tf.write import engine_write
from dh_tf.write.output_spec import DEFAULT_OUTPUT, Outputs, OutputSpec, column_dtype, parse_keep
from dh_tf.write.remote_sink import RemoteTableSink, bind_as_arg, is_remote, remote_static
from dh_tf.write.scoring import Scorer, feature_columns, make_predictor, scored_groups
from dh_tf.write.sinks import PAGE_FILE, HeapSink, ParquetSink, write_all

__all__ = ["NOT_READING_OPTIONS", "PAGE_FILE", "WRITE_PATHS", "OutputSpec", "column_dtype", "predict_table"]

WRITE_PATHS = ("auto", "engine", "public")
_IN_ORDER = "every row is scored once, in table order"
NOT_READING_OPTIONS = {
    "label": "the model's outputs are the result",
    "sample_weight": "the model's outputs are the result",
    "label_dtype": "the model's outputs are the result",
    "shuffle": _IN_ORDER,
    "seed": _IN_ORDER,
    "drop_remainder": _IN_ORDER,
    "shuffle_block_rows": _IN_ORDER,
    "cache": f"{_IN_ORDER}; an epoch cache would be written and never read",
    "num_shards": f"{_IN_ORDER}: row i of the result is row i of the input",
    "shard_index": f"{_IN_ORDER}: row i of the result is row i of the input",
}
"""TableLoader options that make no sense for scoring (-> why): rows are read once, all, in table order.
The others are predict_table's keyword parameters, with TableLoader's defaults (but ``batch_size``)."""
_WHERE = "predict_table"
READING = [name for name in LOADER_OPTIONS if name not in NOT_READING_OPTIONS and name != "batch_size"]
"""The TableLoader options predict_table takes and passes on (``batch_size`` is its own: a model call's rows)."""


@checked_keywords(_WHERE, renamed={"path": "directory"}, refused=NOT_READING_OPTIONS)
def predict_table(
    model: Any,
    table: Any,
    features: ColumnSpec,
    *,
    keep: str | Sequence[str] | None = None,
    output: OutputSpec = DEFAULT_OUTPUT,
    batch_size: int = 4096,
    directory: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    write_path: str = "auto",
    bind_as: str | None = None,
    page_rows: int | None = None,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    dtype: Any = "float32",
    prefetch: int = 2,
    reader_threads: int | None = None,
    read_path: str = "auto",
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
) -> Any:
    """Scores every row of ``table`` with ``model`` and returns the predictions as a Deephaven table.

    Row ``i`` of the result is row ``i`` of the input: the ``keep`` columns of the input (any
    type), then one column per model output column. Output column types follow the model's (NOTE
    [ Output column types ] in ``output_spec.py``: float32 -> float, float64 -> double, int8/16/32/64
    -> byte/short/int/long, ...). A refreshing input is scored as one snapshot of the needed columns
    (which must fit the heap). The same model and features give the same columns and types as
    :func:`~dh_tf.write.predict_follow.predict_follow` (one output spec and one scoring loop).

    Args:
        model: a Keras model (scored like ``model.predict(x, batch_size=batch_size)``: its
            ``predict_on_batch`` on each ``batch_size`` slice, NOTE [ Scoring a group with
            predict_on_batch ] in ``scoring.py``)
            or any callable ``f(x)`` returning one array, a list/tuple or a dict of arrays, each of
            shape ``[n]`` or ``[n, k]``.
        table: a ``deephaven.table.Table``, static or refreshing, or a ``pydeephaven`` table on a
            remote server (NOTE [ Remote write-back ] in ``remote_sink.py``: the result is then a
            pydeephaven table of the same Session, built on the server page by page).
        features: the model input, as in :class:`~dh_tf.reading.loader.TableLoader` (a name, a list, or a
            dict of name -> names for multi-input models).
        keep: input column(s) to carry into the result (keys, timestamps), or None.
        output: the result column name for a one-column output (``[n]`` or ``[n, 1]``); a list of
            names for an ``[n, k]`` output (k names); for a multi-output model a dict of output
            name -> name or list (Keras list outputs are named by ``model.output_names``; a
            callable's list/tuple outputs are matched with the dict's entries in order), or one
            name, numbered: the default gives a model of two one-column outputs the columns
            ``Prediction0`` and ``Prediction1``, in the model's output order (NOTE [ Numbered outputs ]
            in ``output_spec.py``).
        batch_size: rows per model call; features are read in groups of whole batches. The default,
            4096, is larger than training's 32 because scoring has no gradient step to keep small:
            bigger calls amortize the model's per-call cost (``benchmarks/predict.py``).
        directory: None builds the result in the heap. A directory (e.g. ``"scores.parquet"``)
            writes one Parquet file per group into it and returns the table read back from it
            (``ParquetFileLayout.FLAT_PARTITIONED``): bounded memory, any table size.
        overwrite: replace what is at ``directory``; otherwise it must not exist or be an empty directory.
        write_path: ``"auto"`` (engine internals when they work here), ``"engine"`` or ``"public"``
            (``deephaven.new_table`` paired by position with a join; slower). See NOTE [ Engine
            internals for writing ] in ``engine_write.py`` and NOTE [ Sinks ] in ``sinks.py``.
        bind_as: remote tables only: also bind the result under this name in the server's scope
            (the IDE shows it), as the last step, so an error leaves nothing bound.
        page_rows, nulls, dtype, prefetch, reader_threads, read_path, pad_to, padding, truncating, pad_value:
            as :class:`~dh_tf.reading.loader.TableLoader`, with its defaults. Its other options do not
            apply (:data:`NOT_READING_OPTIONS`: ``label``, ``sample_weight``, ``label_dtype``, ``shuffle``,
            ``seed``, ``drop_remainder``, ``shuffle_block_rows``, ``cache``, ``num_shards``, ``shard_index``):
            every row is read once, in table order; passing one raises ``ArgumentError`` saying so.

    ``path=`` is the deprecated name of ``directory=`` (a ``DeprecationWarning``).

    Returns:
        A ``deephaven.table.Table``: static, in the heap (``directory=None``) or Parquet-backed; for a
        pydeephaven input, a static ``pydeephaven.table.Table`` (released when closed or collected).

    Raises:
        TypeError (ArgumentTypeError): ``table`` is not a Deephaven table, ``model`` is neither a
            Keras model nor callable, an argument has the wrong type (``batch_size`` not an int,
            bools included), an unknown keyword (naming the closest ones), or a model output is not numeric.
        ValueError (ArgumentError): before any data moves: ``batch_size`` < 1, ``output`` does not match the Keras model's outputs,
            ``keep`` names an unknown column or one that is also an output name, ``directory`` exists
            and is not empty without ``overwrite``, a TableLoader option that scoring cannot
            take (``cache`` among them: each row is read once), or a TableLoader check fails. For a callable, at the first group, before
            anything is written: ``output`` does not match what it returned. While scoring: a
            model output has the wrong number of rows. On any error nothing is left at ``directory``.
            Remote tables: ``directory`` or ``write_path`` given, ``bind_as`` not a valid name;
            ``bind_as`` given for an embedded table.
        ConnectionError (RemoteWriteError): the upload or the server-side work failed; every
            temporary server-side table is released and nothing is bound.

    Example:
        >>> scores = predict_table(model, t.where("Split = `test`"), ["A", "B"], keep=["Id", "Ts"])
        >>> multi = predict_table(model, t, ["A", "B"], output={"class": ["P0", "P1"], "value": "V"})
    """
    remote = is_remote(table)
    if not remote:
        check_table(table, _WHERE)
    predictor = make_predictor(model, _WHERE)
    outputs = Outputs(output, _WHERE)
    columns = [f.name for f in table.schema] if remote and table.schema is not None else []
    keep_columns = parse_keep(keep, columns if remote else [c.name for c in table.columns], outputs.names, _WHERE)
    outputs.keep_apart(keep_columns)
    batch_size = int_arg(batch_size, "batch_size", _WHERE, minimum=1)
    overwrite = bool_arg(overwrite, "overwrite", _WHERE)
    write_path = choice_arg(write_path, "write_path", _WHERE, WRITE_PATHS)
    reading_options = pick(locals(), READING)
    bind_as = _check_bind_as(bind_as, remote, directory, write_path)
    out_path = None if directory is None else _check_path(directory, overwrite)
    predictor.check_static(outputs)
    # Validates features and reading options before any data moves (a snapshot included); creates no file.
    TableLoader(table, features, batch_size=batch_size, shuffle=False, **reading_options).close()
    engine = write_path == "engine" or (write_path == "auto" and engine_write.available())
    needed = list(dict.fromkeys([*feature_columns(features), *keep_columns]))
    if remote:
        return _predict_remote(Scorer(predictor, outputs, batch_size), table, features, keep_columns, needed,
                               bind_as, reading_options)

    with _static_table(table, needed) as (static, refreshing):
        loader = TableLoader(static, features, batch_size=batch_size, shuffle=False, **reading_options)
        try:
            scorer = Scorer(predictor, outputs, batch_size)
            with contextlib.closing(scored_groups(loader, scorer)) as groups:
                if out_path is None:
                    sink: Any = HeapSink(static, keep_columns, refreshing=refreshing, engine=engine, where=_WHERE)
                else:
                    sink = ParquetSink(static, keep_columns, out_path, engine=engine)
                return write_all(groups, sink)
        finally:
            loader.close()


def _predict_remote(scorer: Scorer, table: Any, features: ColumnSpec, keep: list[str], needed: list[str],
                    bind_as: str | None, reading_options: dict[str, Any]) -> Any:
    """Scores a pydeephaven table into a server-side table (NOTE [ Remote write-back ] in ``remote_sink.py``)."""
    with remote_static(table, needed, _WHERE) as static:
        loader = TableLoader(static, features, batch_size=scorer.batch_size, shuffle=False, **reading_options)
        try:
            with contextlib.closing(scored_groups(loader, scorer)) as groups:
                return write_all(groups, RemoteTableSink(static, keep, _WHERE, bind_as=bind_as))
        finally:
            loader.close()


def _check_bind_as(bind_as: Any, remote: bool, directory: Any, write_path: str) -> str | None:
    """``bind_as`` checked, and the options a remote table cannot take refused."""
    if remote and directory is not None:
        raise ArgumentError(
            f"{_WHERE}: directory must be None for a remote (pydeephaven) table (got {str(directory)!r}); the "
            "result is built on the server (write it to Parquet there if needed)"
        )
    if remote and write_path != "auto":
        raise ArgumentError(f"{_WHERE}: write_path must be 'auto' for a remote (pydeephaven) table (got {write_path!r})")
    if bind_as is None:
        return None
    if not remote:
        raise ArgumentError(
            f"{_WHERE}: bind_as is for remote (pydeephaven) tables (got {bind_as!r} for an embedded table); "
            "in the server, assign the result to a variable"
        )
    return bind_as_arg(bind_as, _WHERE)


def _check_path(path: Any, overwrite: bool) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"{_WHERE}: directory must be a directory path or None (got {path!r} of type {type(path).__name__})"
        )
    out = Path(path).expanduser().absolute()
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        what = "a non-empty directory" if out.is_dir() else "a file"
        raise ArgumentError(
            f"{_WHERE}: directory must not exist or be an empty directory unless overwrite=True (got {str(path)!r}: {what})"
        )
    return out


@contextlib.contextmanager
def _static_table(table: Any, columns: list[str]) -> Iterator[tuple[Any, bool]]:
    """The table itself if static, else one snapshot of ``columns`` (NOTE [ Refreshing tables ] in sources/protocol.py)."""
    if not table.is_refreshing:
        yield table, False
        return
    from deephaven.liveness_scope import liveness_scope

    with liveness_scope() as scope:
        snapshot = table.view(columns).snapshot()
        scope.preserve(snapshot)
    yield snapshot, True
