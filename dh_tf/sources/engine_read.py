"""The fast read path: column values at row positions, straight from the engine into numpy.

NOTE [ Engine internals ]
This is the only module that uses Deephaven engine internals. For each column it fills a reused
Java chunk from the ``ColumnSource`` (``fillChunk``), then bulk-copies the chunk into a numpy
array through a direct ``ByteBuffer`` over the array's memory (Arrow's
``MemoryUtil.directBuffer``, shipped with the server). Every heavy step is one Java call, during
which jpy releases the GIL, and no large Java array is ever exported to Python (that copy would
hold the GIL). ``tests/testengine_read.py`` checks this path against the public
``deephaven.numpy.to_numpy``; :func:`available` reports whether it works here, and
``pages.PublicColumnReader`` is the fallback.

Boolean columns are read as bytes (``ReinterpretUtils.booleanToByteSource``): true 1, false 0, null -128.

Array columns (NOTE [ Array columns ] in reading/layout.py) fill an object chunk of Java arrays / vectors,
flatten it in Java with the barrage extension's expansion kernels (``DoubleArrayExpansionKernel``,
``DoubleVectorExpansionKernel``, ...: one ``System.arraycopy`` per array, as the server does to send
array columns over Arrow Flight) and bulk-copy the flat chunk the same way, with the per-row offsets,
which check every row's length. Measured (``benchmarks/arrays.py``): at least as many bytes/s as the
same values in scalar columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.sources.column_types import ColumnKind, array_length_error, note_read_error

CHUNK_ROWS = 65536
"""The most rows per ``fillChunk`` call: large enough to amortize the Java call (see :func:`chunk_rows`)."""
CHUNK_BYTES = 8 * 2**20
"""About how many bytes of Java chunks one reader holds: wide tables get shorter chunks (:func:`chunk_rows`)."""
CHUNK_ELEMENTS = 65536
"""Array elements per flattened chunk (array columns flatten ``CHUNK_ELEMENTS // n`` rows at a time)."""
_KERNEL_NAMES = {"byte": "Byte", "short": "Short", "int": "Int", "long": "Long", "float": "Float", "double": "Double"}

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
        typed_buffer(probe, "double").put(0, 1.5)
        return bool(probe[0] == 1.5)
    except Exception:
        return False


def arrays_available() -> bool:
    """True when array columns can take the fast path (the barrage expansion kernels are present)."""
    try:
        _expansion_kernel(next(iter(_array_types())))
        return True
    except Exception:
        return False


def _array_types() -> list[str]:
    return [f"{e}[]" for e in _KERNEL_NAMES] + [f"io.deephaven.vector.{b}Vector" for b in _KERNEL_NAMES.values()]


def _expansion_kernel(array_type: str) -> Any:
    """The barrage kernel that flattens an object chunk of ``array_type`` cells into one primitive chunk."""
    import jpy

    if array_type.endswith("[]"):
        name = f"io.deephaven.extensions.barrage.chunk.array.{_KERNEL_NAMES[array_type[:-2]]}ArrayExpansionKernel"
    else:
        name = f"io.deephaven.extensions.barrage.chunk.vector.{array_type.rsplit('.', 1)[1]}ExpansionKernel"
    return jpy.get_type(name).INSTANCE


def typed_buffer(array: np.ndarray, deephaven_type: str) -> Any:
    """A Java NIO buffer of the array's element type over the array's memory (no copy).

    ``deephaven_type`` is a primitive type name (``byte`` ... ``double``) or ``java.lang.Boolean``
    (bytes). Shared with ``engine_write.py``, the writing twin of this module.
    """
    import jpy

    memory_util = jpy.get_type("org.apache.arrow.memory.util.MemoryUtil")
    byte_order = jpy.get_type("java.nio.ByteOrder")
    raw = memory_util.directBuffer(array.ctypes.data, array.nbytes).order(byte_order.nativeOrder())
    view = _BUFFER_VIEWS[deephaven_type]
    return raw if view is None else getattr(raw, view)()


def chunk_rows(kinds: Mapping[str, ColumnKind]) -> int:
    """Rows per ``fillChunk`` for these columns: :data:`CHUNK_ROWS`, fewer for wide rows.

    Each reader thread holds one chunk (and one fill context) per column: 80 double columns at
    65536 rows are 42 MB per thread, enough to exhaust a small heap (a JVM killed by OutOfMemoryError
    takes the Python process with it). So chunks hold about :data:`CHUNK_BYTES` (65536 rows up to 128-byte rows), at least 4096 rows.
    """
    row_bytes = sum(8 if kind.is_array else kind.dtype.itemsize for kind in kinds.values())
    rows = CHUNK_BYTES // max(1, row_bytes) // 4096 * 4096
    return int(min(CHUNK_ROWS, max(4096, rows)))


class EngineColumnReader:
    """Reads columns of a static table at row positions into numpy arrays, via engine internals.

    Not thread-safe: one reader per reading thread. ``close()`` releases the fill contexts and may be
    called twice.
    """

    def __init__(self, j_table: Any, kinds: Mapping[str, ColumnKind]) -> None:
        import jpy

        self._j_table = j_table
        self._kinds = dict(kinds)
        self._chunk_rows = chunk_rows(self._kinds)
        # Reinterprets when the source can, else wraps it (e.g. update_view formula columns).
        boolean_as_byte = jpy.get_type("io.deephaven.engine.table.impl.sources.ReinterpretUtils").booleanToByteSource
        self._sources = {}
        self._contexts = {}
        self._chunks = {}
        self._kernels = {}
        self._offsets = {}  # array columns: a Java int chunk of row offsets and its numpy copy
        for name, kind in self._kinds.items():
            source = j_table.getColumnSource(name)
            if kind.deephaven_type == "java.lang.Boolean":
                source = boolean_as_byte(source)
            self._sources[name] = source
            self._contexts[name] = source.makeFillContext(self._chunk_rows)
            if kind.is_array:
                self._kernels[name] = _expansion_kernel(kind.deephaven_type)
                self._chunks[name] = jpy.get_type("io.deephaven.chunk.WritableObjectChunk").makeWritableChunk(self._chunk_rows)
                offsets = np.empty(self._chunk_rows + 1, dtype=np.int32)
                java_offsets = jpy.get_type("io.deephaven.chunk.WritableIntChunk").makeWritableChunk(self._chunk_rows + 1)
                self._offsets[name] = (java_offsets, offsets, typed_buffer(offsets, "int"))
            else:
                self._chunks[name] = jpy.get_type(_CHUNK_TYPES[kind.deephaven_type]).makeWritableChunk(self._chunk_rows)

    def read(self, spans: Sequence[tuple[int, int]], out: Mapping[str, np.ndarray]) -> None:
        """Fills ``out[name][:n]`` with the column's values at the rows of ``spans``, in span order.

        ``out[name]`` is C-contiguous, ``[rows]`` for scalar columns and ``[rows, length]`` for array
        columns (a null array is filled with the element's null sentinel).

        Raises:
            ArrayLengthError: a row of an array column has another length than ``out[name].shape[1]``.
            RuntimeError: the engine failed; the exception's note names the column and span.
        """
        buffers = {
            name: typed_buffer(out[name], kind.element_type or kind.deephaven_type) for name, kind in self._kinds.items()
        }
        row_set = self._j_table.getRowSet()
        offset = 0
        for start, stop in spans:
            column = None
            span_offset = offset
            rows = row_set.subSetByPositionRange(start, stop)
            iterator = rows.getRowSequenceIterator()
            try:
                while iterator.hasMore():
                    sequence = iterator.getNextRowSequenceWithLength(self._chunk_rows)
                    size = int(sequence.size())
                    for column, source in self._sources.items():
                        chunk = self._chunks[column]
                        source.fillChunk(self._contexts[column], chunk, sequence)
                        if column in self._kernels:
                            position = start + offset - span_offset
                            self._copy_arrays(column, size, out[column], buffers[column], offset, position)
                        else:
                            chunk.copyToBuffer(0, buffers[column], offset, size)
                    offset += size
            except Exception as error:
                note_read_error(error, column, start, stop)
                raise
            finally:
                iterator.close()
                rows.close()

    def _copy_arrays(self, column: str, size: int, out: np.ndarray, buffer: Any, offset: int, position: int) -> None:
        """Flattens the ``size`` filled arrays of ``column`` into ``out[offset:offset + size]`` ([rows, n]).

        ``position`` is the table position of the first of these rows (for errors).
        """
        length = out.shape[1]
        step = max(1, CHUNK_ELEMENTS // length)
        kernel, chunk = self._kernels[column], self._chunks[column]
        java_offsets, offsets, offsets_buffer = self._offsets[column]
        for first in range(0, size, step):
            rows = min(step, size - first)
            flat = kernel.expand(chunk.slice(first, rows), 0, java_offsets)
            try:
                java_offsets.copyToBuffer(0, offsets_buffer, 0, rows + 1)
                lengths = np.diff(offsets[: rows + 1])
                if (lengths == length).all():
                    flat.copyToBuffer(0, buffer, (offset + first) * length, rows * length)
                    continue
                # Null arrays expand to nothing; any other length is an error (NOTE [ Array columns ]).
                nulls = np.zeros(rows, dtype=bool)
                for index in np.flatnonzero(lengths != length):
                    if lengths[index] == 0 and chunk.get(first + int(index)) is None:
                        nulls[index] = True
                    else:
                        kind = self._kinds[column]
                        raise array_length_error(column, kind, position + first + int(index), int(lengths[index]), length)
                values = np.empty((rows - int(nulls.sum()), length), dtype=out.dtype)
                if len(values):
                    flat.copyToBuffer(0, typed_buffer(values, self._kinds[column].element_type), 0, values.size)
                target = out[offset + first : offset + first + rows]
                target[~nulls] = values
                target[nulls] = self._kinds[column].null_value
            finally:
                flat.close()

    def close(self) -> None:
        """Releases the engine's fill contexts and chunks. Safe to call twice."""
        contexts, self._contexts = self._contexts, {}
        chunks, self._chunks = self._chunks, {}
        offsets, self._offsets = self._offsets, {}
        for context in contexts.values():
            context.close()
        for chunk in chunks.values():
            chunk.close()
        for java_offsets, _, _ in offsets.values():
            java_offsets.close()
