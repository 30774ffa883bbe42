"""Aligned page arrays (NOTE [ Aligned page arrays ]): the helpers, and every group a loader yields.

TensorFlow's ``from_generator`` takes a numpy array without a copy only when its data starts on a
64-byte boundary; these tests check that every group of every kind of epoch (engine, cached,
shuffled) starts there, and that the helpers give exactly numpy's values.
"""

from __future__ import annotations

import numpy as np
import pytest

import dh_tf
from dh_tf.reading.buffers import ALIGNMENT, concatenate_rows, empty_aligned, take_rows


@pytest.mark.parametrize("shape,dtype", [((0,), np.float32), ((1,), np.int8), ((1000, 3), np.float64),
                                          ((7, 2, 5), np.int32), (5, np.uint16)])
def test_empty_aligned_has_the_shape_dtype_and_alignment_asked_for(shape, dtype):
    for _ in range(20):  # a fresh allocation each time: the offset into malloc's block varies
        a = empty_aligned(shape, dtype)
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
        assert a.dtype == np.dtype(dtype)
        assert a.size == 0 or a.ctypes.data % ALIGNMENT == 0
        assert a.flags.c_contiguous and a.flags.writeable
        a[...] = 3  # every byte is the array's own
        assert (a == 3).all()


def test_take_rows_and_concatenate_rows_equal_numpy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1001, 16)).astype(np.float32)
    rows = rng.permutation(1001)[:999]
    got = take_rows(x, rows)
    assert got.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(got, np.take(x, rows, axis=0))
    parts = [x[:3], x[500:900], x[1000:]]
    joined = concatenate_rows(parts)
    assert joined.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(joined, np.concatenate(parts))
    words = np.array(["a", "bb", "ccc"], dtype=object)
    np.testing.assert_array_equal(take_rows(words, np.array([2, 0])), np.array(["ccc", "a"], dtype=object))
    np.testing.assert_array_equal(concatenate_rows([words[:1], words[2:]]), np.array(["a", "ccc"], dtype=object))


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_group_of_engine_and_cached_epochs_starts_aligned(make_table, shuffle):
    table = make_table(100_000, "X = (float)(Id % 1013) / 7", "K = (int)(Id % 17)", "B = (byte)(Id % 3)")
    with dh_tf.TableLoader(table, {"x": ["X", "Id"], "k": "K", "b": "B"}, "Id", batch_size=1000, page_rows=16_000,
                           shuffle=shuffle, seed=3, cache=True) as loader:
        for epoch in range(2):  # the first reads the engine (and fills the cache), the second the cache
            seen = []
            for x, y in loader.iter_groups():
                for array in (x["x"], x["k"], x["b"], y):
                    assert array.ctypes.data % ALIGNMENT == 0, (epoch, array.dtype, array.ctypes.data % ALIGNMENT)
                seen.append(y)
            ids = np.concatenate(seen)
            assert sorted(ids.tolist()) == list(range(100_000))
