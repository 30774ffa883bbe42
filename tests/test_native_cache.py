"""Cached epochs through to_dataset: the same batches as uncached epochs, never a table read once cached.

Unshuffled epochs are read by TensorFlow alone (NOTE [ Native cached epochs ] in tf/cached_epochs.py):
no page passes through Python. Shuffled ones are read by the loader's page readers from the cache.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import dh_tf
from dh_tf.reading.epoch_cache import CachingPageReader
from dh_tf.sources.engine import EngineEpoch

ROWS = 200_003


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(ROWS, "X = (float)(Id % 1013) / 7", "K = (int)(Id % 17)")


@pytest.fixture
def native_only(monkeypatch):
    """After ``forbid(shuffle)``, the engine may not be read, nor (without shuffle) the loader's page reader."""

    def forbid(shuffle=False):
        def fail(*args, **kwargs):
            raise AssertionError("a page was read from the table or in Python although the cache covers the epoch")

        monkeypatch.setattr(EngineEpoch, "open_reader", fail)
        if not shuffle:
            monkeypatch.setattr(CachingPageReader, "read", fail)

    return forbid


def batches(ds):
    return [[a.numpy() for a in _flat(element)] for element in ds]


def _flat(element):
    import tensorflow as tf

    return tf.nest.flatten(element)


def assert_same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        for a, b in zip(g, e):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


SPEC = dict(features={"x": ["X", "Id"], "k": "K"}, label="Id")


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size,page_rows,drop_remainder", [
    (1000, 70_000, False),  # divides the page; the epoch ends in a partial batch
    (999, 70_001, False),  # divides nothing
    (999, 70_001, True),
    (4096, 65_536, True),
])
def test_cached_epochs_are_the_uncached_epochs(table, native_only, shuffle, batch_size, page_rows, drop_remainder):
    kw = dict(batch_size=batch_size, page_rows=page_rows, drop_remainder=drop_remainder, shuffle=shuffle, seed=5,
              shuffle_block_rows=65536, reader_threads=2)
    reference = dh_tf.to_dataset(table, **SPEC, **kw)
    expected = [batches(reference) for _ in range(3)]
    ds = dh_tf.to_dataset(table, **SPEC, cache=True, **kw)
    assert ds.element_spec == reference.element_spec
    assert_same(batches(ds), expected[0])  # fills the cache
    native_only(shuffle)
    for epoch in (1, 2):
        assert_same(batches(ds), expected[epoch])
        assert ds.dh_tf_loader.state_dict()["epoch"] == epoch + 1
    if shuffle:
        assert not np.array_equal(expected[1][0][-1], expected[2][0][-1])
    ds.dh_tf_loader.close()


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_read_their_own_rows_from_the_cache(table, native_only, shuffle):
    kw = dict(batch_size=1000, page_rows=70_001, shuffle=shuffle, seed=2, num_shards=2, reader_threads=2)
    datasets = [dh_tf.to_dataset(table, "Id", "X", cache=True, shard_index=k, **kw) for k in range(2)]
    references = [dh_tf.to_dataset(table, "Id", "X", shard_index=k, **kw) for k in range(2)]
    expected = [[batches(ref) for _ in range(2)] for ref in references]
    for ds in datasets:
        batches(ds)
    native_only(shuffle)
    got = [batches(ds) for ds in datasets]
    for k in range(2):
        assert_same(got[k], expected[k][1])
    ids = np.concatenate([b[0] for k in range(2) for b in got[k]])
    assert np.array_equal(np.sort(ids), np.arange(ROWS // 2 * 2))
    for ds in datasets:
        ds.dh_tf_loader.close()


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("resume_at", [1, 70, 150, 200])
def test_a_resumed_epoch_from_the_cache_is_the_rest_of_the_epoch(table, native_only, shuffle, resume_at):
    kw = dict(batch_size=1000, page_rows=70_001, shuffle=shuffle, seed=9, reader_threads=2)
    reference = dh_tf.TableLoader(table, **SPEC, **kw)
    reference.set_epoch(1)
    full = [list(_flat(batch)) for batch in reference]  # epoch 1, numpy
    loader = dh_tf.TableLoader(table, **SPEC, cache=True, **kw)
    batches(dh_tf.dataset_from_loader(loader))  # epoch 0 fills the cache
    loader.load_state_dict(loader.state_dict(epoch=1, batches=resume_at))
    native_only(shuffle)
    rest = batches(dh_tf.dataset_from_loader(loader))
    assert_same(rest, full[resume_at:])
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batches"] == 0
    loader.close()


def test_an_interrupted_first_epoch_reads_the_table_again_then_the_cache(table, native_only):
    kw = dict(batch_size=999, page_rows=70_001, reader_threads=2)
    reference = dh_tf.to_dataset(table, **SPEC, **kw)
    expected = [batches(reference) for _ in range(3)]
    ds = dh_tf.to_dataset(table, **SPEC, cache=True, **kw)
    assert_same(batches(ds.take(3)), expected[0][:3])  # the cache covers a page or two only
    assert_same(batches(ds), expected[1])  # read from the table (and the cache), filling the cache
    native_only()
    assert_same(batches(ds), expected[2])
    ds.dh_tf_loader.close()


def _open_files_under(directory):
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory):
            out.append(target)
    return out


def test_no_file_or_thread_is_left_open_and_close_removes_the_files(table, native_only, monkeypatch):
    ds = dh_tf.to_dataset(table, "Id", "X", batch_size=1000, page_rows=70_001, cache=True, reader_threads=2)
    directory = ds.dh_tf_loader.cache_directory
    first = batches(ds)
    native_only()
    threads = threading.active_count()
    own = sorted(_open_files_under(directory))  # the cache's own descriptors, one per file
    assert len(own) == 2
    expected_ids = np.sort(np.concatenate([b[0] for b in first]))
    for _ in range(100):  # the bar: nothing accumulates over 100 cached epochs
        again = batches(ds)
        assert np.array_equal(np.sort(np.concatenate([b[0] for b in again])), expected_ids)
        assert sorted(_open_files_under(directory)) == own  # tf.data closed its files with the pass
    assert not [t.name for t in threading.enumerate() if t.name.startswith("dh_tf-")]
    assert threading.active_count() <= threads
    ds.dh_tf_loader.close()
    assert not os.path.exists(directory) and _open_files_under(directory) == []
    monkeypatch.undo()  # a closed loader reads the table again
    assert len(batches(ds)) == 201
