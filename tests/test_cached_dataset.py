"""Cached epochs through to_dataset: the same batches as uncached epochs, and no table read once cached.

Batch sizes that do and do not divide the page, drop_remainder both ways, shuffle, shards, an epoch
resumed mid-way and an interrupted first epoch; nothing left open after 100 cached epochs.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import dh_tf
from dh_tf.sources.engine import EngineEpoch

ROWS = 200_003


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(ROWS, "X = (float)(Id % 1013) / 7", "K = (int)(Id % 17)")


@pytest.fixture
def cache_only(monkeypatch):
    """After ``forbid()``, reading a page from the table fails the test (the cache must serve it)."""

    def forbid():
        def fail(*args, **kwargs):
            raise AssertionError("a page was read from the table although the cache covers the epoch")

        monkeypatch.setattr(EngineEpoch, "open_reader", fail)

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
def test_cached_epochs_are_the_uncached_epochs(table, cache_only, shuffle, batch_size, page_rows, drop_remainder):
    kw = dict(batch_size=batch_size, page_rows=page_rows, drop_remainder=drop_remainder, shuffle=shuffle, seed=5,
              shuffle_block_rows=65536, reader_threads=2)
    reference = dh_tf.to_dataset(table, **SPEC, **kw)
    expected = [batches(reference) for _ in range(3)]
    ds = dh_tf.to_dataset(table, **SPEC, cache=True, **kw)
    assert ds.element_spec == reference.element_spec
    assert_same(batches(ds), expected[0])  # fills the cache
    cache_only()
    for epoch in (1, 2):
        assert_same(batches(ds), expected[epoch])
        assert ds.dh_tf_loader.state_dict()["epoch"] == epoch + 1
    if shuffle:
        assert not np.array_equal(expected[1][0][-1], expected[2][0][-1])
    ds.dh_tf_loader.close()


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_read_their_own_rows_from_the_cache(table, cache_only, shuffle):
    kw = dict(batch_size=1000, page_rows=70_001, shuffle=shuffle, seed=2, num_shards=2, reader_threads=2)
    datasets = [dh_tf.to_dataset(table, "Id", "X", cache=True, shard_index=k, **kw) for k in range(2)]
    references = [dh_tf.to_dataset(table, "Id", "X", shard_index=k, **kw) for k in range(2)]
    expected = [[batches(ref) for _ in range(2)] for ref in references]
    for ds in datasets:
        batches(ds)
    cache_only()
    got = [batches(ds) for ds in datasets]
    for k in range(2):
        assert_same(got[k], expected[k][1])
    ids = np.concatenate([b[0] for k in range(2) for b in got[k]])
    assert np.array_equal(np.sort(ids), np.arange(ROWS // 2 * 2))
    for ds in datasets:
        ds.dh_tf_loader.close()


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("resume_at", [1, 70, 150, 200])
def test_a_resumed_epoch_from_the_cache_is_the_rest_of_the_epoch(table, cache_only, shuffle, resume_at):
    kw = dict(batch_size=1000, page_rows=70_001, shuffle=shuffle, seed=9, reader_threads=2)
    reference = dh_tf.TableLoader(table, **SPEC, **kw)
    reference.set_epoch(1)
    full = [list(_flat(batch)) for batch in reference]  # epoch 1, numpy
    loader = dh_tf.TableLoader(table, **SPEC, cache=True, **kw)
    batches(dh_tf.dataset_from_loader(loader))  # epoch 0 fills the cache
    loader.load_state_dict(loader.state_dict(epoch=1, batches=resume_at))
    cache_only()
    rest = batches(dh_tf.dataset_from_loader(loader))
    assert_same(rest, full[resume_at:])
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batches"] == 0
    loader.close()


def test_an_interrupted_first_epoch_reads_the_table_again_then_the_cache(table, cache_only):
    kw = dict(batch_size=999, page_rows=70_001, reader_threads=2)
    reference = dh_tf.to_dataset(table, **SPEC, **kw)
    expected = [batches(reference) for _ in range(3)]
    ds = dh_tf.to_dataset(table, **SPEC, cache=True, **kw)
    assert_same(batches(ds.take(3)), expected[0][:3])  # the cache covers a page or two only
    assert_same(batches(ds), expected[1])  # read from the table (and the cache), filling the cache
    cache_only()
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


def test_no_file_or_thread_is_left_open_and_close_removes_the_files(table, cache_only, monkeypatch):
    ds = dh_tf.to_dataset(table, "Id", "X", batch_size=1000, page_rows=70_001, cache=True, reader_threads=2)
    directory = ds.dh_tf_loader.cache_directory
    first = batches(ds)
    cache_only()
    threads = threading.active_count()
    own = sorted(_open_files_under(directory))  # the cache's own descriptors: one per field file, owner.lock
    assert len(own) == 3
    expected_ids = np.sort(np.concatenate([b[0] for b in first]))
    for _ in range(100):  # the bar: nothing accumulates over 100 cached epochs
        again = batches(ds)
        assert np.array_equal(np.sort(np.concatenate([b[0] for b in again])), expected_ids)
        assert sorted(_open_files_under(directory)) == own  # no descriptor accumulates
    assert not [t.name for t in threading.enumerate() if t.name.startswith("dh_tf-")]
    assert threading.active_count() <= threads
    ds.dh_tf_loader.close()
    assert not os.path.exists(directory) and _open_files_under(directory) == []
    monkeypatch.undo()  # a closed loader reads the table again
    assert len(batches(ds)) == 201
