"""Predictions as a table: score a Deephaven table with a model, row ``i`` of the result is row ``i`` of the input.

Features are read with :class:`~dh_tf.loader.TableLoader` in table order, in large groups of whole
batches; the model scores one group at a time; its outputs become columns of a new table, next to
the ``keep`` columns of the input (keys, timestamps, any type). The result is built in the heap
(NOTE [ Engine internals for writing ] in ``engine_write.py``), or, with ``path=``, written page by
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
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import TableLoader
from dh_tf.sources.engine import check_table
from dh_tf.write import engine_write

#: What ``output`` names: one column, a list of columns (``[n, k]`` outputs), or a dict of model
#: output name -> one of those (multi-output models).
OutputSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]]

WRITE_PATHS = ("auto", "engine", "public")
NOT_READING_OPTIONS = ("label", "sample_weight", "shuffle", "seed", "drop_remainder")
"""TableLoader options that make no sense for scoring: rows are read once, all, in table order."""
PAGE_FILE = "part-{index:08d}.parquet"
"""Page file names: zero-padded, so name order is row order (FLAT_PARTITIONED reads in name order)."""
_WHERE = "predict_table"
_Groups = Iterator[tuple[int, dict[str, np.ndarray]]]
"""Scored groups: (first row position, result column name -> 1-D values)."""


@dataclass(frozen=True)
class _Target:
    """Which model output fills which columns: ``key`` None (the only output), a dict key, or a list index."""

    key: str | int | None
    columns: tuple[str, ...]

    def describe(self) -> str:
        return "the model's output" if self.key is None else f"model output {self.key!r}"


def predict_table(
    model: Any,
    table: Any,
    features: ColumnSpec,
    *,
    keep: str | Sequence[str] | None = None,
    output: OutputSpec = "Prediction",
    batch_size: int = 4096,
    path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    write_path: str = "auto",
    **reading_options: Any,
) -> Any:
    """Scores every row of ``table`` with ``model`` and returns the predictions as a Deephaven table.

    Row ``i`` of the result is row ``i`` of the input: the ``keep`` columns of the input (any
    type), then one column per model output column. Output column types follow the model's:
    float32 -> float, float64 -> double (float16 -> float), int8/16/32/64 -> byte/short/int/long
    (unsigned -> the next wider signed type, bool -> byte 0/1). A NaN prediction stays NaN; an
    integer prediction equal to Deephaven's null sentinel reads as null. A refreshing input is
    scored as one snapshot of the needed columns (which must fit the heap).

    Args:
        model: a Keras model (scored like ``model.predict(x, batch_size=batch_size)``: its
            ``predict_on_batch`` on each ``batch_size`` slice, NOTE [ Scoring a group with
            predict_on_batch ])
            or any callable ``f(x)`` returning one array, a list/tuple or a dict of arrays, each of
            shape ``[n]`` or ``[n, k]``.
        table: a ``deephaven.table.Table``, static or refreshing.
        features: the model input, as in :class:`~dh_tf.loader.TableLoader` (a name, a list, or a
            dict of name -> names for multi-input models).
        keep: input column(s) to carry into the result (keys, timestamps), or None.
        output: the result column name for a one-column output (``[n]`` or ``[n, 1]``); a list of
            names for an ``[n, k]`` output (k names); for a multi-output model a dict of output
            name -> name or list (Keras list outputs are named by ``model.output_names``; a
            callable's list/tuple outputs are matched with the dict's entries in order).
        batch_size: rows per model call; features are read in groups of whole batches.
        path: None builds the result in the heap. A directory path (e.g. ``"scores.parquet"``)
            writes one Parquet file per group into it and returns the table read back from it
            (``ParquetFileLayout.FLAT_PARTITIONED``): bounded memory, any table size.
        overwrite: replace what is at ``path``; otherwise it must not exist or be an empty directory.
        write_path: ``"auto"`` (engine internals when they work here), ``"engine"`` or ``"public"``
            (``deephaven.new_table`` paired by position with a join; slower). See NOTE [ Engine
            internals for writing ] in ``engine_write.py``.
        **reading_options: more :class:`~dh_tf.loader.TableLoader` options (``nulls``, ``dtype``,
            ``page_rows``, ``prefetch``, ``read_path``, ...), passed through.

    Returns:
        A ``deephaven.table.Table``: static, in the heap (``path=None``) or Parquet-backed.

    Raises:
        TypeError: ``table`` is not a Deephaven table, ``model`` is neither a Keras model nor
            callable, an argument has the wrong type, or a model output is not numeric.
        ValueError: before any data moves: ``output`` does not match the Keras model's outputs,
            ``keep`` names an unknown column or one that is also an output name, ``path`` exists
            and is not empty without ``overwrite``, a reading option is one that scoring cannot
            take, or a TableLoader check fails. For a callable, at the first group, before
            anything is written: ``output`` does not match what it returned. While scoring: a
            model output has the wrong number of rows. On any error nothing is left at ``path``.

    Example:
        >>> scores = predict_table(model, t.where("Split = `test`"), ["A", "B"], keep=["Id", "Ts"])
        >>> multi = predict_table(model, t, ["A", "B"], output={"class": ["P0", "P1"], "value": "V"})
    """
    check_table(table, _WHERE)
    predictor = _make_predictor(model)
    targets = _parse_output(output)
    names = [c for target in targets for c in target.columns]
    _check_column_names(names)
    keep_columns = _parse_keep(keep, [c.name for c in table.columns], names)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ArgumentError(f"{_WHERE}: batch_size must be an int >= 1 (got {batch_size!r})")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ArgumentTypeError(f"{_WHERE}: overwrite must be True or False (got {overwrite!r})")
    if write_path not in WRITE_PATHS:
        raise ArgumentError(f"{_WHERE}: write_path must be one of {list(WRITE_PATHS)} (got {write_path!r})")
    bad = [name for name in NOT_READING_OPTIONS if name in reading_options]
    if bad:
        raise ArgumentError(
            f"{_WHERE}: {bad[0]} must not be given (got {bad[0]}={reading_options[bad[0]]!r}); "
            "every row is scored once, in table order"
        )
    out_path = None if path is None else _check_path(path, bool(overwrite))
    predictor.check_static(targets)
    # Validates features and reading options before any data moves (a snapshot included).
    TableLoader(table, features, batch_size=int(batch_size), shuffle=False, **reading_options).close()
    engine = write_path == "engine" or (write_path == "auto" and engine_write.available())

    with _static_table(table, _needed_columns(features, keep_columns)) as (static, refreshing):
        loader = TableLoader(static, features, batch_size=int(batch_size), shuffle=False, **reading_options)
        try:
            with contextlib.closing(_scored_groups(loader, predictor, targets, int(batch_size))) as groups:
                if out_path is None:
                    return _heap_result(groups, static, keep_columns, refreshing, engine)
                return _parquet_result(groups, static, keep_columns, out_path, engine)
        finally:
            loader.close()


# ---------------------------------------------------------------- argument checks


def _parse_output(output: Any) -> list[_Target]:
    def columns_of(spec: Any, arg: str) -> tuple[str, ...]:
        if isinstance(spec, str):
            return (spec,)
        if isinstance(spec, Sequence) and spec and all(isinstance(c, str) for c in spec):
            return tuple(spec)
        raise ArgumentTypeError(
            f"{_WHERE}: {arg} must be a column name or a non-empty list of names (got {spec!r} of type "
            f"{type(spec).__name__})"
        )

    if isinstance(output, Mapping):
        if not output:
            raise ArgumentError(f"{_WHERE}: output must name at least one model output (got an empty dict)")
        return [_Target(str(key), columns_of(spec, f"output[{key!r}]")) for key, spec in output.items()]
    return [_Target(None, columns_of(output, "output"))]


def _check_column_names(names: list[str]) -> None:
    import jpy

    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ArgumentError(f"{_WHERE}: output must name each column once (got {duplicated} twice)")
    validator = jpy.get_type("io.deephaven.api.util.NameValidator")
    for name in names:
        try:
            validator.validateColumnName(name)
        except Exception as e:
            raise ArgumentError(
                f"{_WHERE}: output must name valid Deephaven columns (got {name!r}: {str(e).splitlines()[0]})"
            ) from e


def _parse_keep(keep: Any, table_columns: list[str], output_names: list[str]) -> list[str]:
    if keep is None:
        return []
    columns = [keep] if isinstance(keep, str) else keep
    if not isinstance(columns, Sequence) or not all(isinstance(c, str) for c in columns):
        raise ArgumentTypeError(
            f"{_WHERE}: keep must be a column name or a list of names (got {keep!r} of type {type(keep).__name__})"
        )
    columns = list(dict.fromkeys(columns))
    unknown = [c for c in columns if c not in table_columns]
    if unknown:
        raise ArgumentError(
            f"{_WHERE}: keep must name columns of the table (got unknown {unknown}; the table has {table_columns})"
        )
    clashes = [c for c in columns if c in output_names]
    if clashes:
        raise ArgumentError(
            f"{_WHERE}: keep must not name an output column (got {clashes}, also in output); rename the output"
        )
    return columns


def _check_path(path: Any, overwrite: bool) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"{_WHERE}: path must be a directory path or None (got {path!r} of type {type(path).__name__})"
        )
    out = Path(path).expanduser().absolute()
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        what = "a non-empty directory" if out.is_dir() else "a file"
        raise ArgumentError(
            f"{_WHERE}: path must not exist or be an empty directory unless overwrite=True (got {str(path)!r}: {what})"
        )
    return out


def _needed_columns(features: Any, keep: list[str]) -> list[str]:
    if isinstance(features, str):
        named: list[str] = [features]
    elif isinstance(features, Mapping):
        named = [c for spec in features.values() for c in ([spec] if isinstance(spec, str) else spec)]
    else:
        named = list(features)
    return list(dict.fromkeys([*named, *keep]))


@contextlib.contextmanager
def _static_table(table: Any, columns: list[str]) -> Iterator[tuple[Any, bool]]:
    """The table itself if static, else one snapshot of ``columns`` (NOTE [ Refreshing tables ])."""
    if not table.is_refreshing:
        yield table, False
        return
    from deephaven.liveness_scope import liveness_scope

    with liveness_scope() as scope:
        snapshot = table.view(columns).snapshot()
        scope.preserve(snapshot)
    yield snapshot, True


# ---------------------------------------------------------------- models


class _Predictor:
    """Calls the model on one group; knows the model's output structure when it can."""

    def __init__(self, function: Callable[[Any], Any] | None = None, keras_model: Any = None) -> None:
        self._function = function
        self._keras = keras_model

    def __call__(self, x: Any, batch_size: int) -> Any:
        if self._function is not None:
            return self._function(x)
        if _num_rows(x) == 0:  # Keras predict fails on zero rows; a direct call gives the dtypes
            import keras

            result = keras.tree.map_structure(keras.ops.convert_to_numpy, self._keras(x, training=False))
        else:
            result = _predict_in_batches(self._keras, x, batch_size)
        if isinstance(result, (list, tuple)) and len(result) > 1:  # Keras list outputs go by name
            result = dict(zip(self._keras.output_names, result))
        return result

    def check_static(self, targets: list[_Target]) -> None:
        """Checks ``output`` against a built Keras model's outputs (a callable: at the first group)."""
        if self._keras is None:
            return
        try:
            tensors = list(self._keras.outputs)
        except (AttributeError, ValueError):  # a Sequential model never built: checked at the first group
            return
        try:
            structure = self._keras.output
        except (AttributeError, ValueError):
            structure = tensors[0] if len(tensors) == 1 else tensors
        if isinstance(structure, (list, tuple)) and len(structure) > 1:
            structure = dict(zip(self._keras.output_names, structure))
        _match(targets, structure, static=True)


def _predict_in_batches(model: Any, x: Any, batch_size: int) -> Any:
    """``model.predict(x, batch_size=batch_size)`` without its per-call input pipeline.

    NOTE [ Scoring a group with predict_on_batch ]
    ``model.predict`` builds a data adapter and a tf.data pipeline per call: 0.3-1 s each, several
    times the compute of a small model on a 500K-row group. ``predict_on_batch`` calls the same
    compiled ``predict_function`` (so a custom ``predict_step``, distribution strategy and
    ``jit_compile`` apply, and ``reduce_retracing`` traces the last partial batch once) on one
    ``batch_size`` slice, directly. Measured on 2 loaded cores, one Dense layer on 16 float32
    features, 4096-row batches: ``model.predict`` 1.0-1.3 M rows/s, ``predict_on_batch`` per slice
    4.7 M, a ``tf.function`` of ``model(x, training=False)`` per slice 4.4-6.1 M (and it would skip
    a custom ``predict_step``). Outputs go straight into one preallocated array per output.

    Raises:
        ValueError: a model output does not have one row per input row.
    """
    import keras

    rows = _num_rows(x)
    outputs: list[np.ndarray] = []
    structure: Any = None
    for start in range(0, rows, batch_size):
        stop = min(start + batch_size, rows)
        batch = {k: v[start:stop] for k, v in x.items()} if isinstance(x, Mapping) else x[start:stop]
        result = model.predict_on_batch(batch)
        leaves = keras.tree.flatten(result)
        if structure is None:
            structure = result
            outputs = [np.empty((rows, *np.shape(leaf)[1:]), np.asarray(leaf).dtype) for leaf in leaves]
        for out, leaf in zip(outputs, leaves):
            if np.shape(leaf)[:1] != (stop - start,):
                raise ArgumentError(
                    f"{_WHERE}: the model's output must have one row per input row (got shape "
                    f"{np.shape(leaf)} for {stop - start} input rows)"
                )
            out[start:stop] = leaf
    return keras.tree.pack_sequence_as(structure, outputs)


def _make_predictor(model: Any) -> _Predictor:
    try:
        import keras

        if isinstance(model, keras.Model):
            return _Predictor(keras_model=model)
    except ImportError:
        pass
    if callable(model):
        return _Predictor(model)
    raise ArgumentTypeError(
        f"{_WHERE}: model must be a Keras model or a callable f(x) returning arrays (got {model!r} of type "
        f"{type(model).__name__})"
    )


def _num_rows(x: Any) -> int:
    first = next(iter(x.values())) if isinstance(x, Mapping) else x
    return int(first.shape[0])


def _match(targets: list[_Target], outputs: Any, *, static: bool = False) -> list[tuple[_Target, Any]]:
    """Pairs each target with its output (array or Keras tensor), checking count, names and widths.

    Raises:
        ValueError: ``output`` does not fit the model's outputs (the message says how).
    """
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    single = targets[0].key is None
    if isinstance(outputs, Mapping):
        if single:
            raise ArgumentError(
                f"{_WHERE}: output must be a dict of model output name -> column name(s) for a model with "
                f"outputs {list(outputs)} (got {_spec_text(targets)})"
            )
        keys = [str(k) for k in outputs]
        if sorted(keys) != sorted(str(t.key) for t in targets):
            raise ArgumentError(
                f"{_WHERE}: output must have one entry per model output {keys} (got {_spec_text(targets)})"
            )
        by_key = {str(k): v for k, v in outputs.items()}
        pairs = [(t, by_key[str(t.key)]) for t in targets]
    elif isinstance(outputs, (list, tuple)):
        if single or len(outputs) != len(targets):
            raise ArgumentError(
                f"{_WHERE}: output must be a dict with one entry per model output, in order, for a model "
                f"returning {len(outputs)} outputs (got {_spec_text(targets)})"
            )
        pairs = list(zip(targets, outputs))
    else:
        if not single:
            raise ArgumentError(
                f"{_WHERE}: output must be a column name or a list of names for a model with one output "
                f"(got {_spec_text(targets)})"
            )
        pairs = [(targets[0], outputs)]
    for target, value in pairs:
        shape = tuple(value.shape)
        width = 1 if len(shape) == 1 else shape[1] if len(shape) == 2 else -1
        if width == -1 or (width is not None and width != len(target.columns)):
            if static and width is None:
                continue
            expected = "[n] or [n, 1]" if len(target.columns) == 1 else f"[n, {len(target.columns)}]"
            raise ArgumentError(
                f"{_WHERE}: output must name one column per column of {target.describe()} of shape "
                f"{_shape_text(shape)} (got {list(target.columns)}, which needs shape {expected})"
            )
    return pairs


def _spec_text(targets: list[_Target]) -> str:
    if targets[0].key is None:
        columns = targets[0].columns
        return repr(columns[0]) if len(columns) == 1 else repr(list(columns))
    return repr({t.key: list(t.columns) for t in targets})


def _shape_text(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join("n" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"


def column_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype a model output of ``dtype`` is stored as (one with a Deephaven column type).

    Raises:
        TypeError: the dtype is not numeric or boolean (or is uint64 / a float wider than 64 bits).
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize <= 8:
        return np.dtype("float32") if dtype.itemsize <= 4 else np.dtype("float64")
    if dtype.name == "bfloat16":
        return np.dtype("float32")
    if dtype.kind == "i":
        return dtype.newbyteorder("=")
    if dtype.kind == "u" and dtype.itemsize < 8:
        return np.dtype(f"int{dtype.itemsize * 16}")
    if dtype.kind == "b":
        return np.dtype("int8")
    raise ArgumentTypeError(
        f"{_WHERE}: model outputs must be numeric or boolean (got dtype {dtype}); supported: float16/32/64, "
        "int8-64, uint8-32, bool"
    )


def _output_columns(pairs: list[tuple[_Target, Any]], num_rows: int) -> dict[str, np.ndarray]:
    """Splits the model's outputs into 1-D arrays, one per result column, checking the row count."""
    columns = {}
    for target, value in pairs:
        array = np.asarray(value)
        if array.shape[0] != num_rows:
            raise ArgumentError(
                f"{_WHERE}: {target.describe()} must have one row per input row (got {array.shape[0]} rows "
                f"for {num_rows} input rows)"
            )
        dtype = column_dtype(array.dtype)
        if array.ndim == 1:
            columns[target.columns[0]] = np.ascontiguousarray(array, dtype=dtype)
        else:
            for index, name in enumerate(target.columns):
                columns[name] = np.ascontiguousarray(array[:, index], dtype=dtype)
    return columns


def _scored_groups(loader: TableLoader, predictor: _Predictor, targets: list[_Target], batch_size: int) -> _Groups:
    """Yields ``(first row position, result columns)`` per group; an empty table gives one empty group.

    The dtypes of the first group are kept for all groups.
    """
    offset = 0
    dtypes: dict[str, np.dtype] | None = None
    groups: Iterator[Any] = loader.iter_groups()
    if loader.num_rows == 0:
        layout = loader.layout
        groups = iter([layout.assemble([np.empty((0, *f.shape), f.dtype) for f in layout.fields])])
    for x in groups:
        rows = _num_rows(x)
        columns = _output_columns(_match(targets, predictor(x, batch_size)), rows)
        if dtypes is None:
            dtypes = {name: values.dtype for name, values in columns.items()}
        columns = {name: values.astype(dtypes[name], copy=False) for name, values in columns.items()}
        yield offset, columns
        offset += rows


# ---------------------------------------------------------------- results


def _keep_table(static: Any, keep: list[str], refreshing: bool) -> Any:
    """The kept columns in the heap, flat (NOTE [ Pairing kept columns with predictions ])."""
    view = static.view(keep)
    return (view if refreshing else view.snapshot()).flatten()  # a snapshot of a ticking table is in heap already


def _heap_result(groups: _Groups, static: Any, keep: list[str], refreshing: bool, engine: bool) -> Any:
    num_rows = int(static.size)
    base = _keep_table(static, keep, refreshing) if keep else None
    if not engine:
        pieces: dict[str, list[np.ndarray]] = {}
        for _, columns in groups:
            for name, values in columns.items():
                pieces.setdefault(name, []).append(values)
        return _public_table({name: np.concatenate(parts) for name, parts in pieces.items()}, base)
    if num_rows > engine_write.MAX_ROWS:
        raise ArgumentError(
            f"{_WHERE}: path must be given for tables of more than {engine_write.MAX_ROWS} rows (got "
            f"{num_rows} rows and path=None)"
        )
    builders: dict[str, engine_write.ColumnBuilder] = {}
    for offset, columns in groups:
        for name, values in columns.items():
            if name not in builders:
                builders[name] = engine_write.ColumnBuilder(values.dtype, num_rows)
            builders[name].put(offset, values)
    sources = {} if base is None else engine_write.flat_sources(base)
    sources.update({name: builder.column_source() for name, builder in builders.items()})
    return engine_write.table_from_sources(num_rows, sources)


def _parquet_result(groups: _Groups, static: Any, keep: list[str], out: Path, engine: bool) -> Any:
    from deephaven import parquet
    from deephaven.parquet import ParquetFileLayout

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    partial.mkdir()
    try:
        for index, (offset, columns) in enumerate(groups):
            rows = len(next(iter(columns.values())))
            base = None
            if keep:
                base = static.slice(offset, offset + rows).view(keep).snapshot()
            page = engine_write.to_table(columns, base) if engine else _public_table(columns, base)
            parquet.write(page, str(partial / PAGE_FILE.format(index=index)))
        _replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return parquet.read(str(out), file_layout=ParquetFileLayout.FLAT_PARTITIONED)


def _replace(partial: Path, out: Path) -> None:
    """Moves the finished directory to ``out``, replacing what is there (checked by ``_check_path``)."""
    if not out.exists() and not out.is_symlink():
        partial.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    out.rename(old)
    partial.rename(out)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def _public_table(arrays: Mapping[str, np.ndarray], base: Any) -> Any:
    """The public-API fallback: ``new_table`` of the arrays, joined to ``base`` by row position."""
    from deephaven import column, new_table

    makers = {
        "int8": column.byte_col,
        "int16": column.short_col,
        "int32": column.int_col,
        "int64": column.long_col,
        "float32": column.float_col,
        "float64": column.double_col,
    }
    predictions = new_table([makers[values.dtype.name](name, values) for name, values in arrays.items()])
    if base is None:
        return predictions
    row = "__dh_tf_row"
    joined = base.update_view(f"{row} = ii").natural_join(predictions.update_view(f"{row} = ii"), on=row)
    return joined.drop_columns(row)
