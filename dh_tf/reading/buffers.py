"""New page arrays whose data starts on a 64-byte boundary, so TensorFlow takes them without a copy.

NOTE [ Aligned page arrays ]
``tf.data.Dataset.from_generator`` turns each numpy array the generator yields into a tensor. When the
array's data starts on a 64-byte boundary (Eigen's widest alignment, ``EIGEN_MAX_ALIGN_BYTES``), that
tensor *references* the array (TensorFlow keeps a reference until the tensor dies); otherwise it
copies the whole array. numpy's ``np.empty`` of a large array returns ``malloc`` memory, 16 bytes
past a page boundary, so every page used to be copied once more on TensorFlow's side. Measured in one
process (``benchmarks/aligned.py``: 32 MiB pages of 16 float32 + int32, batch 4096, ``ds.reduce``):
the same generator pipeline delivered 1.39x the rows per second with aligned arrays (best pass; 1.36x
median), and 3.77x with pages mapped from a file (NOTE [ Mapped cache reads ]): results in
``benchmarks/results/third-wave/aligned.md``.

Every page array a loader yields is made here (read from the engine or a remote table, gathered by
the shuffle permutation, or joined from a cached page's spans) or is a mapping of the epoch cache
(page-aligned), and pages hold whole batches (NOTE [ Page size ]), so the groups cut from them start
aligned too. dh_tf never touches a page array after yielding it: TensorFlow may still read it, and
may even write into it (an op may reuse an input buffer it holds the only reference to).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALIGNMENT = 64
"""Bytes: the start of every page array is a multiple of this."""


def empty_aligned(shape: Any, dtype: Any) -> np.ndarray:
    """An uninitialized C-ordered array like ``np.empty(shape, dtype)`` whose data starts on :data:`ALIGNMENT` bytes.

    Example:
        >>> a = empty_aligned((3, 5), np.float32)
        >>> a.shape, a.dtype, a.ctypes.data % ALIGNMENT, a.flags.c_contiguous, a.flags.writeable
        ((3, 5), dtype('float32'), 0, True, True)
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if dtype.hasobject or not nbytes:  # Python objects are converted one by one; no bytes, nothing to align
        return np.empty(shape, dtype=dtype)
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def take_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.take(array, rows, axis=0)`` into a new aligned array (``rows`` must be valid indices)."""
    if array.dtype.hasobject:
        return np.take(array, rows, axis=0)
    out = empty_aligned((len(rows), *array.shape[1:]), array.dtype)
    np.take(array, rows, axis=0, out=out, mode="clip")  # "clip": numpy buffers ``out`` under mode="raise"
    return out


def concatenate_rows(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` (along rows) into a new aligned array."""
    if parts[0].dtype.hasobject:
        return np.concatenate(parts)
    out = empty_aligned((sum(len(part) for part in parts), *parts[0].shape[1:]), parts[0].dtype)
    return np.concatenate(parts, out=out)
