"""Where scored groups go: an in-heap table, a Parquet directory, or a live (ticking) table.

NOTE [ Sinks ]
A writer (``predict_table``, ``predict_follow``) reads features, scores them with a
:class:`~dh_tf.write.scoring.Scorer`, and hands each scored group to a sink: ``write(offset,
columns)``, where ``columns`` are 1-D numpy arrays named as result columns and ``offset`` is the
position of the group's first row in the input. The static sinks (:class:`HeapSink`,
:class:`ParquetSink`) pair the ``keep`` columns of the (static) input with the group by position
(NOTE [ Pairing kept columns with predictions ] in ``predict_table.py``), ``finish()`` returns the
result table and ``abort()`` leaves nothing behind; :func:`write_all` drives them. The live sink
(:class:`LiveSink`) publishes each group at once; its kept columns come in ``columns`` (read with
the features, NOTE [ Live kept columns ] in ``predict_follow.py``) and ``fail(error)`` fails its table.

The remote-server sinks (``remote_sink.py``, NOTE [ Remote write-back ]) have the same ``write`` /
``finish`` / ``abort`` (and ``write`` / ``fail`` live), for inputs that are ``pydeephaven`` tables.
The writers only choose the sink from where the input table lives; the output spec and the scoring
loop do not change.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dh_tf.errors import ArgumentError
from dh_tf.sources.jvm_threads import entered
from dh_tf.write import engine_write
from dh_tf.write.publisher import new_blink

PAGE_FILE = "part-{index:08d}.parquet"
"""Page file names: zero-padded, so name order is row order (FLAT_PARTITIONED reads in name order)."""
LIVE_VALUE_DTYPES = {
    "byte": "int8", "short": "int16", "int": "int32", "long": "int64", "float": "float32", "double": "float64",
    "java.lang.Boolean": "int8", "java.time.Instant": "int64",
}
"""Deephaven type -> the numpy dtype of the values a live sink takes for it (Boolean: 1 / 0 / -128 null)."""
COLUMN_TYPE_OF_DTYPE = {"int8": "byte", "int16": "short", "int32": "int", "int64": "long", "float32": "float",
                        "float64": "double"}
"""numpy dtype of a result column -> its Deephaven type (NOTE [ Output column types ])."""


class StaticSink(Protocol):
    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None: ...
    def finish(self) -> Any: ...
    def abort(self) -> None: ...


def write_all(groups: Iterable[tuple[int, dict[str, np.ndarray]]], sink: StaticSink) -> Any:
    """Writes every group into ``sink`` and returns its table; on any error the sink is aborted."""
    try:
        for offset, columns in groups:
            sink.write(offset, columns)
        return sink.finish()
    except BaseException:
        sink.abort()
        raise


class HeapSink:
    """The result as a flat in-heap table: Java arrays filled group by group (engine) or numpy pieces (public).

    Raises (in ``__init__``):
        ArgumentError: the engine path and more rows than a Java array holds.
    """

    def __init__(self, static: Any, keep: list[str], *, refreshing: bool, engine: bool, where: str) -> None:
        self._num_rows = int(static.size)
        if engine and self._num_rows > engine_write.MAX_ROWS:
            raise ArgumentError(
                f"{where}: path must be given for tables of more than {engine_write.MAX_ROWS} rows (got "
                f"{self._num_rows} rows and path=None)"
            )
        view = static.view(keep) if keep else None  # a snapshot of a ticking table is in heap already
        self._base = None if view is None else (view if refreshing else view.snapshot()).flatten()
        self._engine = engine
        self._builders: dict[str, engine_write.ColumnBuilder] = {}
        self._pieces: dict[str, list[np.ndarray]] = {}

    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None:
        for name, values in columns.items():
            if not self._engine:
                self._pieces.setdefault(name, []).append(values)
                continue
            if name not in self._builders:
                self._builders[name] = engine_write.ColumnBuilder(values.dtype, self._num_rows)
            self._builders[name].put(offset, values)

    def finish(self) -> Any:
        if not self._engine:
            return public_table({name: np.concatenate(parts) for name, parts in self._pieces.items()}, self._base)
        sources = {} if self._base is None else engine_write.flat_sources(self._base)
        sources.update({name: builder.column_source() for name, builder in self._builders.items()})
        return engine_write.table_from_sources(self._num_rows, sources)

    def abort(self) -> None:
        self._builders.clear()
        self._pieces.clear()


class ParquetSink:
    """The result as one Parquet file per group in a directory, opened as one table at the end.

    Files go to a hidden partial directory next to ``out``, which replaces ``out`` only when every
    group is written (``out`` was checked by the writer: absent, empty, or ``overwrite``).
    """

    def __init__(self, static: Any, keep: list[str], out: Path, *, engine: bool) -> None:
        self._static, self._keep, self._out, self._engine = static, keep, out, engine
        out.parent.mkdir(parents=True, exist_ok=True)
        self._partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
        self._partial.mkdir()
        self._index = 0

    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None:
        from deephaven import parquet

        rows = len(next(iter(columns.values())))
        base = self._static.slice(offset, offset + rows).view(self._keep).snapshot() if self._keep else None
        page = engine_write.to_table(columns, base) if self._engine else public_table(columns, base)
        parquet.write(page, str(self._partial / PAGE_FILE.format(index=self._index)))
        self._index += 1

    def finish(self) -> Any:
        from deephaven import parquet
        from deephaven.parquet import ParquetFileLayout

        _replace(self._partial, self._out)
        return parquet.read(str(self._out), file_layout=ParquetFileLayout.FLAT_PARTITIONED)

    def abort(self) -> None:
        shutil.rmtree(self._partial, ignore_errors=True)


def _replace(partial: Path, out: Path) -> None:
    """Moves the finished directory to ``out``, replacing what is there."""
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


def public_table(arrays: Mapping[str, np.ndarray], base: Any) -> Any:
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


class LiveSink:
    """Groups published at once into a ticking table: ``table`` keeps every row, ``blink`` is the blink table.

    ``write`` is called from one thread (the scoring thread); ``fail`` from any.

    Args:
        name: the publisher's name, shown in engine logs.
        types: column name -> Deephaven type name (a key of :data:`LIVE_VALUE_DTYPES`), in order.
        exec_ctx: the execution context the tables are made and fed in.
    """

    def __init__(self, name: str, types: Mapping[str, str], exec_ctx: Any) -> None:
        from deephaven import dtypes

        deephaven_types = {
            "byte": dtypes.byte, "short": dtypes.short, "int": dtypes.int32, "long": dtypes.long,
            "float": dtypes.float32, "double": dtypes.double, "java.lang.Boolean": dtypes.bool_,
            "java.time.Instant": dtypes.Instant,
        }
        self.types = dict(types)
        self._exec_ctx = exec_ctx
        definition = {column: deephaven_types[kind] for column, kind in self.types.items()}
        self.blink, self._publisher, self.table = new_blink(name, definition, exec_ctx)

    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None:
        """Publishes one group (every column of ``types``, values as :data:`LIVE_VALUE_DTYPES` or castable)."""
        arrays = {
            name: np.ascontiguousarray(columns[name], dtype=LIVE_VALUE_DTYPES[kind]) for name, kind in self.types.items()
        }
        reinterpret = {name: kind for name, kind in self.types.items() if kind in engine_write.REINTERPRETED}
        with entered(self._exec_ctx):
            self._publisher.add(engine_write.to_table(arrays, types=reinterpret))

    def fail(self, error: BaseException) -> None:
        """Fails the table (and the tables derived from it) with ``error``."""
        self._publisher.publish_failure(error if isinstance(error, Exception) else RuntimeError(repr(error)))
