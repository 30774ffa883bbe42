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

Array columns (NOTE [ Array columns ] in reading/layout.py) fill an object chunk of Java arrays / vectors,
flatten it in Java with the barrage extension's expansion kernels (``DoubleArrayExpansionKernel``,
``DoubleVectorExpansionKernel``, ...: one ``System.arraycopy`` per array, as the server does to send
array columns over Arrow Flight) and bulk-copy the flat chunk the same way, with the per-row offsets,
which check every row's length. Measured (``benchmarks/arrays.py``): at least as many bytes/s as the
same values in scalar columns. A padded column (NOTE [ Ragged arrays ] in ``ragged.py``) copies the flat
chunk into numpy and places its rows there with one index build per chunk (``ragged.place``).

Timestamps (NOTE [ Strings and timestamps ] in sources/column_types.py): ``Instant`` and
``ZonedDateTime`` sources are reinterpreted as long sources of epoch nanoseconds
(``ReinterpretUtils.instantToLongSource`` / ``zonedDateTimeToLongSource``) and read like ``long``.
String and ``LocalDate`` columns fill an object chunk over a reused Java ``Object[]``; one Java call
then turns the chunk into one string (``String.join`` with a NUL separator; ``List.toString`` for
dates), which Python splits (strings) or numpy parses as ``datetime64[D]`` (dates): a few Java
calls per 64K rows instead of one per value. A value holding the separator falls back to one call
per value for its chunk. A chunk of strings holds about :data:`engine_strings.CHUNK_CHARS` characters, not 64K
values whatever their length (64K values of 4 KB would be 256M characters in the chunk, as many
again joined: an OutOfMemoryError on a 1-2 GB heap, and past 2**31 beyond a Java string): the
first chunk of a reader holds :data:`engine_strings.FIRST_STRING_ROWS` rows, and each later one as many rows as
fit :data:`engine_strings.CHUNK_CHARS` at the most characters per row any chunk of this reader held so far
(:attr:`EngineColumnReader.rows_per_chunk`; NOTE [ Page size ] in reading/page_size.py). jpy hands a Java string's UTF-16 surrogate pairs to Python as two code
points: :func:`engine_strings.fix_surrogates` joins them (only for non-ASCII text).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError
from dh_tf.sources.column_types import STRING_TYPE, ColumnKind, array_length_error, column_kind, note_read_error
from dh_tf.sources.engine_strings import java_strings, string_rows
from dh_tf.sources.jvm_threads import java_type
from dh_tf.sources.ragged import PaddedColumn, place

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
    "java.time.Instant": "io.deephaven.chunk.WritableLongChunk",
    "java.time.ZonedDateTime": "io.deephaven.chunk.WritableLongChunk",
}
# Sources read through a reinterpreted primitive source (wrapped when the source cannot reinterpret).
_REINTERPRETED = {
    "java.lang.Boolean": "booleanToByteSource",
    "java.time.Instant": "instantToLongSource",
    "java.time.ZonedDateTime": "zonedDateTimeToLongSource",
}
_OBJECT_TYPES = ("java.lang.String", "java.time.LocalDate")
"""Read through an object chunk and converted in bulk (NOTE above)."""
# How to view a native-order ByteBuffer as the column's element type (None: bytes as they are).
_BUFFER_VIEWS = {
    "byte": None,
    "java.lang.Boolean": None,
    "short": "asShortBuffer",
    "int": "asIntBuffer",
    "long": "asLongBuffer",
    "float": "asFloatBuffer",
    "double": "asDoubleBuffer",
    "java.time.Instant": "asLongBuffer",
    "java.time.ZonedDateTime": "asLongBuffer",
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

    if array_type.endswith("[]"):
        name = f"io.deephaven.extensions.barrage.chunk.array.{_KERNEL_NAMES[array_type[:-2]]}ArrayExpansionKernel"
    else:
        name = f"io.deephaven.extensions.barrage.chunk.vector.{array_type.rsplit('.', 1)[1]}ExpansionKernel"
    return java_type(name).INSTANCE


def typed_buffer(array: np.ndarray, deephaven_type: str) -> Any:
    """A Java NIO buffer of the array's element type over the array's memory (no copy).

    ``deephaven_type`` is a primitive type name (``byte`` ... ``double``) or ``java.lang.Boolean``
    (bytes). Shared with ``write/engine_write.py``, the writing twin of this module.
    """

    memory_util = java_type("org.apache.arrow.memory.util.MemoryUtil")
    byte_order = java_type("java.nio.ByteOrder")
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
        reinterpret = java_type("io.deephaven.engine.table.impl.sources.ReinterpretUtils")
        self._sources = {}
        self._contexts = {}
        self._chunks = {}
        self._kernels = {}
        self._offsets = {}  # array columns: a Java int chunk of row offsets and its numpy copy
        self._flat: dict[str, tuple[np.ndarray, Any]] = {}  # padded columns: flat values and a buffer over them
        self._cells: dict[str, Any] = {}  # array columns: a java.util.List over the Object[] their chunk wraps
        self._objects = {}  # String / LocalDate columns: the Java Object[] their chunk wraps
        self._strings = [name for name, kind in self._kinds.items() if kind.is_string]
        self._chars_per_row: float | None = None  # the most characters per row of a chunk so far (String columns)
        for name, kind in self._kinds.items():
            source = j_table.getColumnSource(name)
            if kind.deephaven_type in _REINTERPRETED:
                source = getattr(reinterpret, _REINTERPRETED[kind.deephaven_type])(source)
            self._sources[name] = source
            self._contexts[name] = source.makeFillContext(self._chunk_rows)
            if kind.deephaven_type in _OBJECT_TYPES:
                self._objects[name] = jpy.array("java.lang.Object", self._chunk_rows)
                self._chunks[name] = java_type("io.deephaven.chunk.WritableObjectChunk").writableChunkWrap(
                    self._objects[name]
                )
            elif kind.is_array:
                self._kernels[name] = _expansion_kernel(kind.deephaven_type)
                cells = jpy.array("java.lang.Object", self._chunk_rows)  # its List view finds null arrays in Java
                self._chunks[name] = java_type("io.deephaven.chunk.WritableObjectChunk").writableChunkWrap(cells)
                self._cells[name] = java_type("java.util.Arrays").asList(cells)
                offsets = np.empty(self._chunk_rows + 1, dtype=np.int32)
                java_offsets = java_type("io.deephaven.chunk.WritableIntChunk").makeWritableChunk(self._chunk_rows + 1)
                self._offsets[name] = (java_offsets, offsets, typed_buffer(offsets, "int"))
            else:
                self._chunks[name] = java_type(_CHUNK_TYPES[kind.deephaven_type]).makeWritableChunk(self._chunk_rows)

    @property
    def rows_per_chunk(self) -> int:
        """Rows of the next chunk: :func:`chunk_rows`, fewer when String columns hold long values (NOTE above)."""
        return string_rows(self._chars_per_row, self._chunk_rows) if self._strings else self._chunk_rows

    def read(
        self,
        spans: Sequence[tuple[int, int]],
        out: Mapping[str, np.ndarray],
        padded: Mapping[str, PaddedColumn] | None = None,
    ) -> None:
        """Fills ``out[name][:n]`` with the column's values at the rows of ``spans``, in span order.

        ``out[name]`` is C-contiguous, ``[rows]`` for scalar columns and ``[rows, length]`` for array
        columns (a null array is filled with the element's null sentinel). The array columns in
        ``padded`` take rows of any length, fit to ``length`` (NOTE [ Ragged arrays ] in ``ragged.py``).

        Raises:
            ArrayLengthError: a row of an array column not in ``padded`` has another length than
                ``out[name].shape[1]``.
            RuntimeError: the engine failed; the exception's note names the column and span.
        """
        padded = padded or {}
        buffers = {
            name: typed_buffer(out[name], kind.element_type or kind.deephaven_type)
            for name, kind in self._kinds.items()
            if name not in self._objects
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
                    sequence = iterator.getNextRowSequenceWithLength(self.rows_per_chunk)
                    size = int(sequence.size())
                    chars = 0
                    for column, source in self._sources.items():
                        chunk = self._chunks[column]
                        source.fillChunk(self._contexts[column], chunk, sequence)
                        if column in self._kernels:
                            position = start + offset - span_offset
                            self._copy_arrays(
                                column, size, out[column], buffers[column], offset, position, padded.get(column)
                            )
                        elif column in self._objects:
                            chars += self._copy_objects(column, size, out[column], offset)
                        else:
                            chunk.copyToBuffer(0, buffers[column], offset, size)
                    if self._strings and size:
                        self._chars_per_row = max(self._chars_per_row or 0.0, chars / size)
                    offset += size
            except Exception as error:
                note_read_error(error, column, start, stop)
                raise
            finally:
                iterator.close()
                rows.close()

    def _copy_arrays(
        self, column: str, size: int, out: np.ndarray, buffer: Any, offset: int, position: int,
        padded: PaddedColumn | None,
    ) -> None:
        """Flattens the ``size`` filled arrays of ``column`` into ``out[offset:offset + size]`` ([rows, n]).

        ``position`` is the table position of the first of these rows (for errors). With ``padded``,
        rows of any length are fit to n and their kept lengths written (NOTE [ Ragged arrays ]).
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
                    if padded is not None:
                        padded.lengths[offset + first : offset + first + rows] = length
                    continue
                if padded is not None:
                    self._place_arrays(column, flat, offsets[: rows + 1], out, offset + first, first, padded)
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

    def _copy_objects(self, column: str, size: int, out: np.ndarray, offset: int) -> int:
        """Converts the ``size`` filled values of a String / LocalDate column into ``out[offset:offset + size]``.

        Returns the characters of the strings read (0 for dates).
        """
        values = self._objects[column]
        if self._kinds[column].is_string:
            out[offset : offset + size], chars = java_strings(values, size)
            return chars
        out[offset : offset + size] = java_local_dates(values, size)
        return 0

    def _place_arrays(
        self, column: str, flat: Any, offsets: np.ndarray, out: np.ndarray, at: int, first: int, padded: PaddedColumn
    ) -> None:
        """Fits the flattened rows (``offsets``: ``rows + 1``) of chunk rows ``first..`` into ``out[at:at + rows]``.

        As ``ragged.place``. A null array expands to nothing, like an empty one: when some row is
        empty, ``List.indexOf(null)`` over the chunk's cells finds the null ones (two Java calls per
        null array, none per empty one), and their length is written as -1.
        """
        rows, total = len(offsets) - 1, int(offsets[-1])
        values, values_buffer = self._flat.get(column, (None, None))
        if values is None or len(values) < total:
            values = np.empty(max(total, CHUNK_ELEMENTS), dtype=self._kinds[column].dtype)
            values_buffer = typed_buffer(values, self._kinds[column].element_type)  # type: ignore[arg-type]
            self._flat[column] = (values, values_buffer)
        if total:
            flat.copyToBuffer(0, values_buffer, 0, total)
        lengths = padded.lengths[at : at + rows]
        place(values, offsets, out[at : at + rows], lengths, padded.padding)
        if (lengths == 0).any():
            cells, start = self._cells[column], first
            while (index := int(cells.subList(start, first + rows).indexOf(None))) >= 0:
                lengths[start + index - first] = -1
                start += index + 1

    def close(self) -> None:
        """Releases the engine's fill contexts and chunks. Safe to call twice."""
        contexts, self._contexts = self._contexts, {}
        chunks, self._chunks = self._chunks, {}
        offsets, self._offsets = self._offsets, {}
        self._flat = {}
        self._cells = {}
        self._objects = {}
        for context in contexts.values():
            context.close()
        for chunk in chunks.values():
            chunk.close()
        for java_offsets, _, _ in offsets.values():
            java_offsets.close()


def string_sizes(j_table: Any, columns: Sequence[str], rows: int) -> dict[str, int]:
    """The bytes of the largest Python ``str`` among the first ``rows`` rows of each String column of ``j_table``.

    Reads those rows as the loader does (NOTE [ Page size ] in reading/page_size.py). A column whose
    rows looked at are all null (or a table with no rows) is left out, and every column where the
    fast path does not work (:func:`available`). ``j_table`` must not tick while it is read (a static
    table, or a snapshot); call it on a thread with an ExecutionContext.
    """
    if not available():
        return {}
    kinds = {name: column_kind(STRING_TYPE) for name in columns}
    rows = min(rows, int(j_table.size()))
    out = {name: np.empty(rows, dtype=object) for name in columns}
    if rows:
        reader = EngineColumnReader(j_table, kinds)
        try:
            reader.read([(0, rows)], out)
        finally:
            reader.close()
    sizes = {name: max((sys.getsizeof(value) for value in out[name] if value is not None), default=-1) for name in columns}
    return {name: size for name, size in sizes.items() if size >= 0}


def java_local_dates(values: Any, size: int) -> np.ndarray:
    """The first ``size`` ``LocalDate`` s of a Java ``Object[]`` as int32 days since 1970-01-01 (NULL_INT for null).

    Raises:
        ArgumentError: a date is more than 2**31 - 1 days away from 1970 (it does not fit int32).
    """

    text = str(java_type("java.util.Arrays").asList(values).subList(0, size).toString())  # "[2024-01-05, null]"
    days = np.array(text[1:-1].replace("null", "NaT").split(", "), dtype="datetime64[D]").view(np.int64)
    nulls = days == np.iinfo(np.int64).min
    if np.abs(days[~nulls]).max(initial=0) >= 2**31 - 1:
        far = int(np.abs(days[~nulls]).max())
        raise ArgumentError(f"a LocalDate is {far} days from 1970-01-01: it does not fit int32 days")
    days[nulls] = -(2**31)
    return days.astype(np.int32)
