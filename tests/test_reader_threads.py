"""Reader threads (NOTE [ Reader threads ] in reading/reader_threads.py): exact, ordered, deterministic, and cleaned up."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dh_tf
from dh_tf.reading.reader_threads import READER_THREAD_NAME


@pytest.fixture(scope="module")
def filtered_parquet(make_table, tmp_path_factory):
    """5003 rows whose Id is the row position, Parquet-backed, filtered by DQL (sparse row keys)."""
    from deephaven import parquet

    path = str(tmp_path_factory.mktemp("threads") / "t.parquet")
    parquet.write(make_table(15_009, "X = (double)Id * 2", "Keep = i % 3 == 1"), path, target_page_size=1 << 14)
    table = parquet.read(path).where("Keep").update_view(["Id = (Id - 1) / 3", "X = (double)Id * 2"])
    assert table.size == 5003
    return table


def alive():
    return [t for t in threading.enumerate() if t.name.startswith(READER_THREAD_NAME)]


def epoch_ids(loader):
    return np.concatenate([x for x, _ in loader])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("reader_threads", [1, 2, 4])
def test_every_row_once_same_order_whatever_the_thread_count(filtered_parquet, reader_threads, prefetch, shuffle):
    kw = dict(batch_size=100, page_rows=700, shuffle=shuffle, seed=3, shuffle_block_rows=65536)
    serial = dh_tf.TableLoader(filtered_parquet, "Id", "X", reader_threads=1, prefetch=0, **kw)
    loader = dh_tf.TableLoader(filtered_parquet, "Id", "X", reader_threads=reader_threads, prefetch=prefetch, **kw)
    for _ in range(2):  # two epochs: the second has a new order with shuffle, the same without
        batches = list(loader)
        ids = np.concatenate([x for x, _ in batches])
        assert np.array_equal(ids, epoch_ids(serial))
        assert np.array_equal(np.sort(ids), np.arange(5003))
        assert [len(x) for x, _ in batches] == [100] * 50 + [3]
        assert np.array_equal(np.concatenate([y for _, y in batches]), ids * 2)
    assert not alive()


def test_default_reader_threads_follows_the_cores(make_table):
    import os

    loader = dh_tf.TableLoader(make_table(10, "X = 1.0"), "X")
    assert loader.reader_threads == max(1, min(8, len(os.sched_getaffinity(0))))


def test_breaking_out_and_del_stop_every_reader_thread(filtered_parquet):
    loader = dh_tf.TableLoader(filtered_parquet, "Id", "X", batch_size=10, page_rows=100, reader_threads=4)
    iterator = iter(loader)
    next(iterator)
    assert len(alive()) == 4
    del iterator
    import gc

    gc.collect()
    assert not alive()


@pytest.mark.parametrize("value,error,message", [
    (0, ValueError, r"reader_threads must be an int >= 1 \(got 0\)"),
    (True, TypeError, r"reader_threads must be an int >= 1 \(got True of type bool\)"),
    ("2", TypeError, r"reader_threads must be an int >= 1 \(got '2' of type str\)"),
])
def test_bad_reader_threads(filtered_parquet, value, error, message):
    with pytest.raises(error, match=message):
        dh_tf.TableLoader(filtered_parquet, "Id", reader_threads=value)
