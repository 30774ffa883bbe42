"""How many rows a page holds when the caller does not say: the one page-size rule, from the row's bytes.

NOTE [ Page size ]
A page is sized by the bytes of one output row (every field: scalars, ``[k]`` lists, ``[n]`` and
``[n, k]`` arrays), so a page is about ``page_mib`` MiB whatever the row width: a row of 16 float32
gives 32 MiB pages of 524,288 rows, a row of 16 arrays of 128 float32 (8 KiB) gives 4,096 rows, not
the 512 MiB that a fixed row count would. At most ``prefetch + reader_threads`` pages exist at once
(NOTE [ Reader threads ]), so that bounds the loader's memory. The rows are rounded down to a
multiple of ``batch_size`` (pages then hold whole batches and nothing is carried between them), and
are never fewer than one batch nor more than :data:`MAX_PAGE_ROWS`. Each source says how many MiB
suit it (``TableSource.page_mib``: 32 for the embedded engine; a remote source pays round trips per
page and wants 64). Follow mode applies the same rule with its own ceiling (one engine
chunk), since it holds the update graph's lock for one page.
"""

from __future__ import annotations

import numpy as np

MAX_PAGE_ROWS = 4 * 2**20
"""The most rows of a default page, however narrow the row."""


STRING_BYTES = 64
"""Bytes counted per string value: its 8-byte pointer and a short Python ``str`` (49 bytes + its length)."""


def row_bytes(fields: tuple) -> int:
    """Bytes of one output row of ``fields`` (each with ``dtype`` and ``shape``; strings: :data:`STRING_BYTES`)."""
    return sum(
        (STRING_BYTES if field.dtype.kind == "O" else field.dtype.itemsize) * int(np.prod(field.shape))
        for field in fields
    )


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
