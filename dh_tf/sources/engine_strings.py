"""String chunks of the engine read path: how many rows one chunk holds, and its Java strings as Python ``str``.

One job: the String side of ``engine_read.py`` (NOTE [ Engine internals ] in ``engine_read.py``): a chunk
holds about :data:`CHUNK_CHARS` characters (:func:`string_rows`), its values cross to Python as one
joined Java string (:func:`java_strings`), and jpy's UTF-16 surrogate pairs are joined again
(:func:`fix_surrogates`). Remote follow sizes its pages by the same rule (``sources/remote_follow.py``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from dh_tf.sources.jvm_threads import java_type

CHUNK_CHARS = 4 * 2**20
"""About the most characters of strings one chunk holds (all its String columns), joined in one Java string."""
FIRST_STRING_ROWS = 1024
"""Rows of a reader's first chunk when it reads String columns, before it has measured them."""
STRING_SEPARATOR = "\x00"
"""Joins a chunk's strings into one Java string (NOTE [ Engine internals ]); a value holding it is read one by one."""


def string_rows(chars_per_row: float | None, most: int) -> int:
    """Rows of strings of ``chars_per_row`` characters (all String columns) that fit :data:`CHUNK_CHARS`.

    Between 1 and ``most``; :data:`FIRST_STRING_ROWS` (at most ``most``) when not measured yet (None).
    Also sizes remote follow pages (``sources/remote_follow.py``).
    """
    if chars_per_row is None:
        return min(most, FIRST_STRING_ROWS)
    return int(max(1, min(most, CHUNK_CHARS // max(1.0, chars_per_row))))


def java_strings(values: Any, size: int) -> tuple[list[str | None], int]:
    """The first ``size`` strings of a Java ``Object[]`` as Python ``str`` (None for null), in a few Java calls.

    Returns the strings and their characters in all (a null counts 4, as joined: ``"null"``).
    """

    java_list = java_type("java.util.Arrays").asList(values).subList(0, size)
    joined = fix_surrogates(java_type("java.lang.String").join(STRING_SEPARATOR, java_list))
    parts: list[str | None] = list(joined.split(STRING_SEPARATOR))
    chars = len(joined) - len(parts) + 1
    if len(parts) != size:  # a value holds the separator
        strings = [None if values[i] is None else fix_surrogates(values[i]) for i in range(size)]
        return strings, sum(len(value) for value in strings if value is not None)
    if "null" in joined:  # String.join writes a null as "null": ask Java which ones were
        index = -1
        with contextlib.suppress(ValueError):
            while True:
                index = parts.index("null", index + 1)
                if values[index] is None:
                    parts[index] = None
    return parts, chars


def fix_surrogates(text: str) -> str:
    """Joins the UTF-16 surrogate pairs jpy leaves in a Java string's Python copy (lone ones become U+FFFD)."""
    if text.isascii():
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
