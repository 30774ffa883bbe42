"""What rows exist: the table check, the execution context, and one consistent snapshot per epoch.

NOTE [ Refreshing tables ]
Reading a ticking table page by page without the update-graph lock gives torn rows (values from
two update cycles). Holding the lock across pages would stall the engine for a whole epoch. So each
epoch of a refreshing table reads one static snapshot of just the needed columns
(``table.view(columns).snapshot()``): consistent, and the engine keeps ticking meanwhile. The
snapshot holds those columns in heap, so a refreshing table must fit the heap; static tables (e.g.
Parquet-backed, filtered with ``where``) are read in place, never copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any


def check_table(table: Any, where: str) -> None:
    """Raises TypeError unless ``table`` is a ``deephaven.table.Table``."""
    try:
        from deephaven.table import Table
    except Exception as e:
        raise TypeError(
            f"{where}: table must be a deephaven.table.Table (got {type(table).__name__}); "
            f"import deephaven failed ({e}), start the Deephaven server or embedded server first"
        ) from e
    if not isinstance(table, Table):
        raise TypeError(f"{where}: table must be a deephaven.table.Table (got {type(table).__name__})")


def column_types(table: Any) -> dict[str, str]:
    """The table's column name -> Java type name (``double``, ``java.lang.String``, ``double[]``), in order."""
    return {column.name: _type_name(column.data_type) for column in table.columns}


def _type_name(data_type: Any) -> str:
    jclass = getattr(data_type.j_type, "jclass", None)  # primitives have none; arrays read "[D" otherwise
    return str(jclass.getTypeName()) if jclass is not None else data_type.j_name


def current_exec_ctx() -> Any:
    """The calling thread's Deephaven ExecutionContext, to open on reader threads later."""
    from deephaven.execution_context import get_exec_ctx

    return get_exec_ctx()


@contextlib.contextmanager
def epoch_table(table: Any, columns: Sequence[str], exec_ctx: Any) -> Iterator[Any]:
    """The table to read for one epoch: the table itself, or a snapshot if it is refreshing.

    See NOTE [ Refreshing tables ]. Opens ``exec_ctx`` only while taking the snapshot.
    """
    if not table.is_refreshing:
        yield table
        return
    from deephaven.liveness_scope import liveness_scope

    # The scope releases the per-epoch view (a listener on the ticking table) as soon as the
    # snapshot exists; only the static snapshot outlives it.
    with exec_ctx, liveness_scope() as scope:
        snapshot = table.view(list(columns)).snapshot()
        scope.preserve(snapshot)
    yield snapshot
