"""Where rows come from: the embedded engine, a remote server, and the one dispatch to them.

The only layer (with ``write/``) that touches ``deephaven``, ``jpy`` or ``pydeephaven``
(NOTE [ Sources ] in ``protocol.py``).
"""

from __future__ import annotations

from typing import Any

from dh_tf.sources.protocol import TableSource

__all__ = ["TableSource", "open_source"]


def open_source(table: Any, where: str, *, read_path: str = "auto") -> TableSource:
    """The source for ``table``: an embedded ``deephaven.table.Table``, a ``pydeephaven.table.Table``
    (read over Arrow Flight, no JVM here: ``sources/remote.py``), or a source as it is.

    Raises:
        TypeError: ``table`` is not a table dh_tf can read.
        ValueError: a pydeephaven table whose Session or table is closed.
    """
    if all(hasattr(table, name) for name in ("column_types", "is_refreshing", "page_mib", "open_epoch", "num_rows")):
        return table
    if type(table).__module__.startswith("pydeephaven"):  # decided without importing pydeephaven
        from dh_tf.sources.remote import RemoteSource

        return RemoteSource(table, where)
    from dh_tf.sources.engine import EngineSource

    return EngineSource(table, where, read_path=read_path)
