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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dh_tf.checks import UNSET, bool_arg, choice_arg, int_arg, renamed_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import TableLoader
from dh_tf.sources.engine import check_table
from dh_tf.write import engine_write
from dh_tf.write.output_spec import Outputs, OutputSpec, column_dtype, parse_keep
from dh_tf.write.remote_sink import RemoteTableSink, bind_as_arg, is_remote, remote_static
from dh_tf.write.scoring import Scorer, feature_columns, make_predictor, scored_groups
from dh_tf.write.sinks import PAGE_FILE, HeapSink, ParquetSink, write_all

__all__ = ["NOT_READING_OPTIONS", "PAGE_FILE", "WRITE_PATHS", "OutputSpec", "column_dtype", "predict_table"]

WRITE_PATHS = ("auto", "engine", "public")
NOT_READING_OPTIONS = ("label", "sample_weight", "shuffle", "seed", "drop_remainder", "cache")
"""TableLoader options that make no sense for scoring: rows are read once, all, in table order (so an
epoch cache would be written and never read)."""
_WHERE = "predict_table"


def predict_table(
    model: Any,
    table: Any,
    features: ColumnSpec,
    *,
    keep: str | Sequence[str] | None = None,
    output: OutputSpec = "Prediction",
    batch_size: int = 4096,
    directory: str | os.PathLike[str] | None = UNSET,
    overwrite: bool = False,
    write_path: str = "auto",
    path: str | os.PathLike[str] | None = UNSET,
    bind_as: str | None = None,
    **reading_options: Any,
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
            callable's list/tuple outputs are matched with the dict's entries in order).
        batch_size: rows per model call; features are read in groups of whole batches. The default,
            4096, is larger than training's 32 because scoring has no gradient step to keep small:
            bigger calls amortize the model's per-call cost (``benchmarks/predict.py``).
        directory: None builds the result in the heap. A directory (e.g. ``"scores.parquet"``)
            writes one Parquet file per group into it and returns the table read back from it
            (``ParquetFileLayout.FLAT_PARTITIONED``): bounded memory, any table size.
        path: the old name of ``directory`` (deprecated, a ``DeprecationWarning``).
        overwrite: replace what is at ``directory``; otherwise it must not exist or be an empty directory.
        write_path: ``"auto"`` (engine internals when they work here), ``"engine"`` or ``"public"``
            (``deephaven.new_table`` paired by position with a join; slower). See NOTE [ Engine
            internals for writing ] in ``engine_write.py`` and NOTE [ Sinks ] in ``sinks.py``.
        bind_as: remote tables only: also bind the result under this name in the server's scope
            (the IDE shows it), as the last step, so an error leaves nothing bound.
        **reading_options: more :class:`~dh_tf.reading.loader.TableLoader` options (``nulls``, ``dtype``,
            ``page_rows``, ``prefetch``, ``read_path``, ...), passed through.

    Returns:
        A ``deephaven.table.Table``: static, in the heap (``directory=None``) or Parquet-backed; for a
        pydeephaven input, a static ``pydeephaven.table.Table`` (released when closed or collected).

    Raises:
        TypeError (ArgumentTypeError): ``table`` is not a Deephaven table, ``model`` is neither a
            Keras model nor callable, an argument has the wrong type (``batch_size`` not an int,
            bools included), or a model output is not numeric.
        ValueError (ArgumentError): before any data moves: ``batch_size`` < 1, ``output`` does not match the Keras model's outputs,
            ``keep`` names an unknown column or one that is also an output name, ``directory`` exists
            and is not empty without ``overwrite``, a reading option is one that scoring cannot
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
    batch_size = int_arg(batch_size, "batch_size", _WHERE, minimum=1)
    overwrite = bool_arg(overwrite, "overwrite", _WHERE)
    write_path = choice_arg(write_path, "write_path", _WHERE, WRITE_PATHS)
    bad = [name for name in NOT_READING_OPTIONS if name in reading_options]
    if bad:
        why = "; an epoch cache would be written and never read" if bad[0] == "cache" else ""
        raise ArgumentError(
            f"{_WHERE}: {bad[0]} must not be given (got {bad[0]}={reading_options[bad[0]]!r}); "
            f"every row is scored once, in table order{why}"
        )
    directory = renamed_arg(directory, path, "directory", "path", _WHERE, None)
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
