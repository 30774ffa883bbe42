"""The decoded epoch cache (NOTE [ Epoch cache ] in reading/epoch_cache.py): exact, never stale, owned and cleaned up."""

from __future__ import annotations

import gc
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

import dh_tf
from dh_tf.errors import CacheSpaceError
from dh_tf.sources.engine import EngineEpoch


@pytest.fixture(scope="module")
def table(make_table, tmp_path_factory):
    """300_017 Parquet rows (Id = position), a null in N every 500 rows, filtered by DQL."""
    from deephaven import parquet

    path = str(tmp_path_factory.mktemp("cache") / "t.parquet")
    parquet.write(make_table(600_034, "X = (float)(Id % 1013) / 7", "N = Id % 1000 == 4 ? NULL_DOUBLE : (double)Id",
                             "Keep = i % 2 == 0"), path)
    return parquet.read(path).where("Keep").update_view(["Id = Id / 2"])


@pytest.fixture
def no_engine_reads(monkeypatch):
    """After this is called, opening an engine span reader fails the test (the cache must serve)."""

    def forbid():
        def fail(self):
            raise AssertionError("the engine was read although the cache covers the epoch")

        monkeypatch.setattr(EngineEpoch, "open_reader", fail)

    return forbid


def epoch(loader):
    return list(loader)


def test_later_epochs_equal_the_first_byte_for_byte_and_skip_the_engine(table, no_engine_reads):
    with dh_tf.TableLoader(table, {"id": "Id", "xs": ["X", "N"]}, "Id", batch_size=1000, page_rows=70_000,
                           nulls={"N": "nan"}, cache=True, reader_threads=2) as loader:
        directory = loader.cache_directory
        first = epoch(loader)
        no_engine_reads()
        for _ in range(2):
            again = epoch(loader)
            assert len(again) == len(first) == 301
            for (x1, y1), (x2, y2) in zip(first, again):
                assert x1["xs"].tobytes() == x2["xs"].tobytes() and x1["id"].tobytes() == x2["id"].tobytes()
                assert y1.dtype == y2.dtype and y1.tobytes() == y2.tobytes()
        nulls = np.isnan(np.concatenate([x["xs"][:, 1] for x, _ in again]))
        assert np.array_equal(np.flatnonzero(nulls), np.flatnonzero(np.arange(300_017) % 500 == 2))
    assert not os.path.exists(directory)


def test_shuffled_epochs_from_the_cache_are_new_permutations_of_the_same_rows(table, no_engine_reads):
    kw = dict(batch_size=4096, shuffle=True, seed=8, page_rows=131072)
    loader = dh_tf.TableLoader(table, ["Id", "X"], "Id", cache=True, **kw)
    reference = dh_tf.TableLoader(table, ["Id", "X"], "Id", **kw)
    expected = [np.concatenate([y for _, y in reference]) for _ in range(2)]  # epochs 0 and 1, no cache
    first = np.concatenate([y for _, y in loader])
    no_engine_reads()
    second = np.concatenate([y for _, y in loader])
    assert np.array_equal(np.sort(first), np.arange(300_017)) and np.array_equal(np.sort(second), np.sort(first))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, expected[0]) and np.array_equal(second, expected[1])  # same (seed, epoch) order
    loader.close()


@pytest.mark.parametrize("stop_after", [0, 1, 40])
def test_an_interrupted_first_epoch_leaves_a_cache_that_is_never_wrong(table, stop_after):
    loader = dh_tf.TableLoader(table, "Id", "X", batch_size=1000, page_rows=50_000, cache=True, reader_threads=2)
    for step, _ in enumerate(loader):
        if step == stop_after:
            break
    ids = np.concatenate([x for x, _ in loader])
    assert np.array_equal(ids, np.arange(300_017))
    assert np.array_equal(np.concatenate([x for x, _ in loader]), ids)
    loader.close()


def test_an_error_mid_epoch_marks_nothing_wrong(table, no_engine_reads):
    loader = dh_tf.TableLoader(table, "Id", "N", batch_size=1000, page_rows=50_000, cache=True)
    with pytest.raises(dh_tf.NullValueError, match="column 'N'"):
        epoch(loader)
    with pytest.raises(dh_tf.NullValueError, match="column 'N'"):  # never served from a half-written cache
        epoch(loader)
    loader.close()


def test_the_directory_is_removed_by_close_del_and_in_a_given_parent(table, tmp_path):
    loader = dh_tf.TableLoader(table, "Id", batch_size=1000, cache=tmp_path)
    directory = Path(loader.cache_directory)
    assert directory.parent == tmp_path and directory.is_dir()
    epoch(loader)
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["field0.bin"] and (directory / "field0.bin").stat().st_size == 300_017 * 4
    loader.close()
    loader.close()  # twice is safe
    assert not directory.exists() and list(tmp_path.iterdir()) == []
    assert len(epoch(loader)) == 301  # still reads, from the table
    loader = dh_tf.TableLoader(table, "Id", batch_size=1000, cache=str(tmp_path))
    directory = Path(loader.cache_directory)
    del loader
    gc.collect()
    assert not directory.exists()


def test_to_dataset_passes_cache_through_to_fit(table, no_engine_reads):
    import keras

    ds = dh_tf.to_dataset(table, ["X"], "Id", batch_size=4096, cache=True, label_dtype="float32")
    directory = ds.dh_tf_loader.cache_directory
    assert os.path.isdir(directory)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    first = np.concatenate([y.numpy() for _, y in ds])
    no_engine_reads()
    history = model.fit(ds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.array_equal(np.concatenate([y.numpy() for _, y in ds]), first)
    ds.dh_tf_loader.close()
    assert not os.path.exists(directory)


def test_cache_on_a_refreshing_table_is_refused(server):
    from deephaven import time_table

    ticking = time_table("PT0.1s").update(["X = (double)i"])
    with pytest.raises(ValueError, match=r"cache= needs a static table, but this table is refreshing"):
        dh_tf.TableLoader(ticking, "X", cache=True)


@pytest.mark.parametrize("value,error,message", [
    (1, TypeError, r"cache must be False, True \(a temporary directory\) or a directory path \(got 1 of type int\)"),
    (b"/tmp", TypeError, r"cache must be False, True .* \(got b'/tmp' of type bytes\)"),
    ("/no/such/dir", ValueError, r"cache directory '/no/such/dir' does not exist or is not a directory"),
    ("/proc/self", ValueError, r"cannot create the cache in '/proc/self'|is not writable"),
])
def test_bad_cache_arguments(table, value, error, message):
    with pytest.raises(error, match=message):
        dh_tf.TableLoader(table, "Id", cache=value)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights; skipped where the machine refuses)."""
    mount_point = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_is_a_clear_error_with_nothing_left_behind(table, tiny_disk):
    with pytest.raises(CacheSpaceError, match=rf"no room for the epoch cache in '{tiny_disk}': it needs "
                                              rf"{300_017 * 8} bytes .* for 300017 rows"):
        dh_tf.TableLoader(table, ["Id", "X"], batch_size=1000, cache=tiny_disk)
    assert list(tiny_disk.iterdir()) == []
    assert isinstance(CacheSpaceError(), OSError)
