"""Arrays of any length fit to a fixed length N, exactly as ``keras.utils.pad_sequences`` does.

NOTE [ Ragged arrays ]
Padding is opt-in: with ``pad_to=N`` (all array columns read, or a dict column -> N) every row of an
array column becomes N elements, as ``keras.utils.pad_sequences(rows, maxlen=N, padding=...,
truncating=..., value=pad_value, dtype=<the output dtype>)`` makes it: a longer row is cut
(``truncating="pre"`` keeps its last N elements, ``"post"`` its first N), a shorter one is padded
(``padding="pre"`` puts the pad values before the row's elements, ``"post"`` after them), an empty
row is all pad values. Keras' defaults are the defaults: ``"pre"``, ``"pre"``, ``0.0``. Without
``pad_to`` a column's length is fixed and a row of another length is an ``ArrayLengthError``
(NOTE [ Array columns ] in ``reading/layout.py``).

The work is split at the source seam (NOTE [ Sources ] in ``protocol.py``): a span reader gets a
:class:`PaddedColumn` for each padded column, places each row's kept elements into the ``[rows, N]``
native array with :func:`place` (pad positions hold 0, never a null sentinel) and writes each row's
kept length into ``lengths`` (-1 for a null array). The page reader (``reading/pages.py``) applies the
null policy to null *elements*, then writes ``pad_value`` into the pad positions (:func:`pad_mask`)
of the output array, after the cast: so the pad value is ``pad_sequences``' own (``np.full(...,
value, dtype)``), whatever the column's element type. Each column of a ``[batch, n, k]`` field is
padded on its own (equal to ``pad_sequences`` on ``[L, k]`` rows when the k columns of a row have
the same length, as windows made together do).

A null array is an empty row with a null: under ``nulls="error"`` (the column's policy) it raises
``NullValueError`` naming the row; under a fill policy (``"nan"`` or a number) it becomes all
``pad_value``, like an empty row (the fill is for null *elements*: a missing sequence is not a
sequence of missing values, and Keras' ``Masking`` skips it like any pad).

Placement is vectorized per page (no per-row Python loop, no per-element index): the engine
flattens a chunk of arrays into one value chunk with per-row offsets (``engine_read.py``), and
:func:`place` drops the cut elements with one mask over the flat values and writes the rest into
the kept positions of the output with one boolean-mask assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_SIDES = ("pre", "post")
"""The values of ``padding`` and ``truncating``, as ``keras.utils.pad_sequences`` takes them."""


@dataclass(frozen=True)
class Padding:
    """How the arrays of one column are fit to ``length`` elements (NOTE [ Ragged arrays ])."""

    length: int
    padding: str = "pre"
    truncating: str = "pre"


@dataclass(frozen=True)
class PaddedColumn:
    """One array column a span reader reads padded into ``out[name]`` (``[rows, padding.length]``).

    The reader writes ``lengths[i]``: the elements of row i kept (``min(len, N)``), -1 for a null array.
    """

    padding: Padding
    lengths: np.ndarray


def place(values: np.ndarray, offsets: np.ndarray, out: np.ndarray, lengths: np.ndarray, padding: Padding) -> None:
    """Fits row i, ``values[offsets[i]:offsets[i + 1]]``, into ``out[i]`` (NOTE [ Ragged arrays ]).

    ``out`` is ``[rows, N]`` (``rows = len(offsets) - 1``; any view); its pad positions get 0 and
    ``lengths[i]`` the number of elements kept. Null arrays are the caller's to mark (-1).

    Example:
        >>> out, kept = np.empty((2, 3)), np.empty(2, dtype=np.int32)
        >>> place(np.arange(5.0), np.array([0, 1, 5]), out, kept, Padding(3, "pre", "pre"))
        >>> out.tolist(), kept.tolist()
        ([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0]], [1, 3])
    """
    rows, n = out.shape[0], out.shape[1]
    offsets = np.asarray(offsets, dtype=np.int64)
    row_lengths = np.diff(offsets)
    kept = np.minimum(row_lengths, n)
    lengths[:rows] = kept
    flat = values[offsets[0] : offsets[-1]]
    if rows and (row_lengths == n).all():
        out[...] = flat.reshape(out.shape)
        return
    # Boolean masks, no per-element index: the kept elements, in row order, fill the kept positions
    # of ``out`` in row-major order; cut elements are dropped by a mask over the flat values.
    keep = ~pad_mask(kept, n, padding.padding)
    cut = np.flatnonzero(row_lengths > n)
    if len(cut):
        first = offsets[cut] - offsets[0]
        starts = first if padding.truncating == "pre" else first + n
        edges = np.zeros(len(flat) + 1, dtype=np.int8)
        edges[starts] = 1
        edges[starts + row_lengths[cut] - n] = -1
        flat = flat[np.cumsum(edges[:-1], dtype=np.int8) == 0]
    out[~keep] = 0
    out[keep] = flat


def pad_mask(lengths: np.ndarray, n: int, padding: str) -> np.ndarray:
    """``[rows, n]`` booleans, True at the pad positions of rows that kept ``lengths`` elements (-1: none)."""
    kept = np.maximum(lengths, 0)[:, None]
    columns = np.arange(n)[None, :]
    return columns < n - kept if padding == "pre" else columns >= kept
