"""How many rows a page holds when the caller does not say: the one page-size rule, from the row's bytes.

NOTE [ Page size ]
A page is sized by the bytes of one output row (every field: scalars, ``[k]`` lists, ``[n]`` and
``[n, k]`` arrays, strings), so a page is about ``page_mib`` MiB whatever the row width: a row of 16
float32 gives 32 MiB pages of 524,288 rows, a row of 16 arrays of 128 float32 (8 KiB) gives 4,096
rows, not the 512 MiB that a fixed row count would. At most ``prefetch + reader_threads`` pages exist
at once (NOTE [ Reader threads ]), so that bounds the loader's memory. The rows are rounded down to
a multiple of ``batch_size`` (pages then hold whole batches and nothing is carried between them),
and are never fewer than one batch nor more than :data:`MAX_PAGE_ROWS`. Each source says how many
MiB suit it (``TableSource.page_mib``: 32 for the embedded engine; a remote source pays round trips
per page and wants 64). Follow mode applies the same rule with its own ceiling (one engine chunk),
since it holds the update graph's lock for one page.

A String value has no fixed size, so it is *measured*: a source that has ``string_sizes(columns,
rows)`` reads the first :data:`SAMPLE_ROWS` rows of its String columns and reports the largest
Python ``str`` of each (``sys.getsizeof``); a value then counts that plus its 8-byte pointer. A
column with no value there (an empty live table), or a source that cannot measure, counts
:data:`STRING_BYTES`. With *page bytes* = ``page_rows`` x the row's bytes, the contract is:

    peak RSS above the baseline <= (prefetch + reader_threads + 1) x 2 x page bytes

(the pages holding permits, plus the page of the batch the consumer still holds; each at most
twice, since a reader's scratch array keeps its last page's values until it reads the next), as long
as no later value is longer than the longest of the sample (longer ones grow pages in proportion;
pass ``page_rows`` for such a table). The engine side holds at most :data:`engine_strings.CHUNK_CHARS`
characters of strings per reader thread and chunk, measured as it reads (NOTE [ Engine internals ]),
so the JVM heap stays below ``-Xmx`` whatever the sample saw. ``tests/test_string_memory.py`` checks
both with 2-4 KB strings and ``-Xmx512m``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_PAGE_ROWS = 4 * 2**20
"""The most rows of a default page, however narrow the row."""
STRING_BYTES = 64
"""Bytes counted per String value that no sample measured: its 8-byte pointer and a short Python ``str``."""
POINTER_BYTES = 8
"""The object array's pointer to each measured ``str``."""
SAMPLE_ROWS = 4096
"""Rows at the start of a table whose String values are measured (NOTE [ Page size ])."""


def row_bytes(fields: tuple, source: Any = None) -> int:
    """Bytes of one output row of ``fields`` (each with ``dtype``, ``shape`` and ``columns``).

    A String field counts, per column, the bytes ``source.string_sizes`` measures (NOTE [ Page
    size ]), or :data:`STRING_BYTES` where it measures nothing (no such method, no value sampled).
    Measuring reads :data:`SAMPLE_ROWS` rows: call it on a thread the source may be read from.
    """
    strings = string_bytes(fields, source)
    return sum(
        sum(strings[column] for column in field.columns)  # a String field is [rows] or [rows, k]: one value per column
        if field.dtype.kind == "O"
        else field.dtype.itemsize * int(np.prod(field.shape))
        for field in fields
    )


def string_bytes(fields: tuple, source: Any = None) -> dict[str, int]:
    """Bytes counted per value of each String column of ``fields``: measured by ``source``, else :data:`STRING_BYTES`."""
    columns = sorted({column for field in fields if field.dtype.kind == "O" for column in field.columns})
    measure = getattr(source, "string_sizes", None)
    measured: Mapping[str, int] = measure(columns, SAMPLE_ROWS) if columns and measure is not None else {}
    return {column: POINTER_BYTES + measured[column] if column in measured else STRING_BYTES for column in columns}


def default_page_rows(
    bytes_per_row: int, batch_size: int, *, page_mib: float = 32, max_rows: int = MAX_PAGE_ROWS
) -> int:
    """The page rows for rows of ``bytes_per_row`` bytes (NOTE [ Page size ]).

    Example:
        >>> default_page_rows(64, 4096)      # 16 float32: 32 MiB
        524288
        >>> default_page_rows(8192, 32)      # 16 arrays of 128 float32
        4096
        >>> default_page_rows(8192, 10000)   # never less than one batch
        10000
    """
    rows = int(page_mib * 2**20) // max(1, bytes_per_row)
    rows = min(rows, max_rows)
    if rows >= batch_size:
        rows -= rows % batch_size
    return max(batch_size, rows)
