"""The fast read path: column values at row positions, straight from the engine into numpy.

NOTE [ Engine internals ]
This is the only module that uses Deephaven engine internals. For each column it fills a reused
Java chunk from the ``ColumnSource`` (``fillChunk``), then bulk-copies the chunk into a numpy
array through a direct ``ByteBuffer`` over the array's memory (Arrow's
``MemoryUtil.directBuffer``, shipped with the server). Every heavy step is one Java call, during
which jpy releases the GIL, and no large Java array is ever exported to Python (that copy would
hold the GIL). ``tests/test_engine_read.py`` checks this path against the public
``deephaven.numpy.to_numpy``; :func:`available` reports whether it works here, and
``pages.PublicColumnReader`` is the fallback.

Boolean columns are read as bytes (``ReinterpretUtils.booleanToByteSource``): true 1, false 0, null -128.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.columns import ColumnKind, note_read_error

CHUNK_ROWS = 65536
"""Rows per ``fillChunk`` call: large enough to amortize the Java call, small enough to cache."""

_CHUNK_TYPES = {
    "byte": "io.deephaven.chunk.WritableByteChunk",
    "short": "io.deephaven.chunk.WritableShortChunk",
    "int": "io.deephaven.chunk.WritableIntChunk",
    "long": "io.deephaven.chunk.WritableLongChunk",
    "float": "io.deephaven.chunk.WritableFloatChunk",
    "double": "io.deephaven.chunk.WritableDoubleChunk",
    "java.lang.Boolean": "io.deephaven.chunk.WritableByteChunk",
}
# How to view a native-order ByteBuffer as the column's element type (None: bytes as they are).
_BUFFER_VIEWS = {
    "byte": None,
    "java.lang.Boolean": None,
    "short": "asShortBuffer",
    "int": "asIntBuffer",
    "long": "asLongBuffer",
    "float": "asFloatBuffer",
    "double": "asDoubleBuffer",
}


def available() -> bool:
    """True when the fast path works in this JVM (the engine and Arrow's MemoryUtil are present)."""
    try:
        probe = np.zeros(2, dtype=np.float64)
        _typed_buffer(probe, "double").put(0, 1.5)
        return bool(probe[0] == 1.5)
    except Exception:
        return False


def _typed_buffer(array: np.ndarray, deephaven_type: str) -> Any:
    """A Java NIO buffer of the array's element type over the array's memory (no copy)."""
    import jpy

    memory_util = jpy.get_type("org.apache.arrow.memory.util.MemoryUtil")
    byte_order = jpy.get_type("java.nio.ByteOrder")
    raw = memory_util.directBuffer(array.ctypes.data, array.nbytes).order(byte_order.nativeOrder())
    view = _BUFFER_VIEWS[deephaven_type]
    return raw if view is None else getattr(raw, view)()


class EngineColumnReader:
    """Reads columns of a static table at row positions into numpy arrays, via engine internals.

    Not thread-safe: one reader per reading thread. ``close()`` releases the fill contexts and may be
    called twice.
    """

    def __init__(self, j_table: Any, kinds: Mapping[str, ColumnKind]) -> None:
        import jpy

        self._j_table = j_table
        self._kinds = dict(kinds)
        # Reinterprets when the source can, else wraps it (e.g. update_view formula columns).
        boolean_as_byte = jpy.get_type("io.deephaven.engine.table.impl.sources.ReinterpretUtils").booleanToByteSource
        self._sources = {}
        self._contexts = {}
        self._chunks = {}
        for name, kind in self._kinds.items():
            source = j_table.getColumnSource(name)
            if kind.deephaven_type == "java.lang.Boolean":
                source = boolean_as_byte(source)
            self._sources[name] = source
            self._contexts[name] = source.makeFillContext(CHUNK_ROWS)
            self._chunks[name] = jpy.get_type(_CHUNK_TYPES[kind.deephaven_type]).makeWritableChunk(CHUNK_ROWS)

    def read(self, spans: Sequence[tuple[int, int]], out: Mapping[str, np.ndarray]) -> None:
        """Fills ``out[name][:n]`` with the column's values at the rows of ``spans``, in span order.

        Raises:
            RuntimeError: the engine failed; the exception's note names the column and span.
        """
        buffers = {name: _typed_buffer(out[name], kind.deephaven_type) for name, kind in self._kinds.items()}
        row_set = self._j_table.getRowSet()
        offset = 0
        for start, stop in spans:
            column = None
            rows = row_set.subSetByPositionRange(start, stop)
            iterator = rows.getRowSequenceIterator()
            try:
                while iterator.hasMore():
                    sequence = iterator.getNextRowSequenceWithLength(CHUNK_ROWS)
                    size = int(sequence.size())
                    for column, source in self._sources.items():
                        chunk = self._chunks[column]
                        source.fillChunk(self._contexts[column], chunk, sequence)
                        chunk.copyToBuffer(0, buffers[column], offset, size)
                    offset += size
            except Exception as error:
                note_read_error(error, column, start, stop)
                raise
            finally:
                iterator.close()
                rows.close()

    def close(self) -> None:
        """Releases the engine's fill contexts and chunks. Safe to call twice."""
        contexts, self._contexts = self._contexts, {}
        chunks, self._chunks = self._chunks, {}
        for context in contexts.values():
            context.close()
        for chunk in chunks.values():
            chunk.close()
