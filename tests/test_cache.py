"""The decoded epoch cache (NOTE [ Epoch cache ] in reading/epoch_cache.py): exact, never stale, owned and cleaned up."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import dh_tf
from dh_tf.errors import CacheError, CacheSpaceError
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


FULL_DISK_SCRIPT = """
import os, subprocess, sys, tempfile
from dh_tf.errors import CacheError, CacheSpaceError
from dh_tf.reading.epoch_cache import EpochCache
from dh_tf.reading.layout import build_layout

layout = build_layout({"Id": "long", "X": "float"}, ["Id", "X"], None, None, dtype="float32", label_dtype=None,
                      nulls="error")
root = tempfile.mkdtemp()
for name, options in (("small", "size=64k"), ("no-inodes", "size=1m,nr_inodes=2")):
    disk = os.path.join(root, name)
    os.mkdir(disk)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", disk], check=True)
    if name == "no-inodes":
        os.mkdir(os.path.join(disk, "taken"))  # the last inode: the cache's directory gets ENOSPC
    try:
        EpochCache(disk, layout, 300_017, "TableLoader")
    except CacheSpaceError as error:
        print(name, "|", error, "|", sorted(os.listdir(disk)))
"""


def test_a_full_disk_is_a_clear_error_with_nothing_left_behind(tmp_path):
    """Real full file systems, mounted without root: tmpfs inside a user and mount namespace."""
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", FULL_DISK_SCRIPT],
                          capture_output=True, text=True, check=False, timeout=120)
    if done.returncode and done.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" | ", 1) for line in done.stdout.splitlines())
    assert set(lines) == {"small", "no-inodes"}
    for name, left in (("small", "[]"), ("no-inodes", "['taken']")):
        message, listing = lines[name].rsplit(" | ", 1)
        assert re.search(rf"TableLoader: no room for the epoch cache in '.*/{name}': it needs {300_017 * 8} bytes "
                         r"\(2\.3 MiB\) for 300017 rows; free \d+ bytes there, or pass cache=<a directory on a bigger "
                         r"disk> \(No space left on device\)", message), message
        assert listing == left  # nothing left behind
    assert isinstance(CacheSpaceError(), OSError) and isinstance(CacheSpaceError(), dh_tf.Error)


def test_shards_with_a_cache_hold_their_share_and_serve_later_shuffled_epochs_from_disk(table, no_engine_reads):
    """Bug 3: each of n shards reserved the whole table, and with shuffle its cache never filled."""
    kw = dict(batch_size=1000, shuffle=True, seed=3, page_rows=50_000, num_shards=4, cache=True)
    loaders = [dh_tf.TableLoader(table, "Id", **kw, shard_index=k) for k in range(4)]
    sizes = [os.path.getsize(Path(loader.cache_directory) / "field0.bin") for loader in loaders]
    assert sizes == [75_004 * 4] * 4  # a quarter of the table each (300_017 // 4 rows), not the whole
    first = [np.concatenate(list(loader)) for loader in loaders]
    no_engine_reads()
    second = [np.concatenate(list(loader)) for loader in loaders]
    for k in range(4):
        assert np.array_equal(np.sort(first[k]), np.arange(75_004 * k, 75_004 * (k + 1)))
        assert np.array_equal(np.sort(second[k]), np.sort(first[k])) and not np.array_equal(second[k], first[k])
    for loader in loaders:
        loader.close()


@pytest.mark.parametrize("reader_threads,prefetch", [(1, 0), (2, 2)])
def test_close_during_an_epoch_fails_the_next_page_and_touches_no_file_it_does_not_own(
        table, reader_threads, prefetch):
    """Bug 4: close() while reader threads held the cache emptied its descriptor list under them."""
    loader = dh_tf.TableLoader(table, "Id", batch_size=1000, page_rows=20_000, cache=True,
                               reader_threads=reader_threads, prefetch=prefetch)
    directory = loader.cache_directory
    batches = iter(loader)
    for _ in range(25):  # into the second page
        next(batches)
    loader.close()
    with pytest.raises(dh_tf.UsageError, match=r"TableLoader: the loader of columns \['Id'\] was closed during an "
                                               r"epoch; no page is read after close\(\)"):
        for _ in batches:
            pass
    assert not os.path.exists(directory)
    assert not _open_files_under(directory)  # the JVM may open the table's Parquet file meanwhile: not ours
    assert len(list(loader)) == 301  # a later epoch reads the table, without the cache


def _open_files_under(directory: str) -> list[str]:
    """The files under ``directory`` that this process holds open (removed ones included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(directory + os.sep):
                found.append(target)
    return found


def test_close_from_another_thread_while_readers_run_never_breaks_a_page(table):
    """Bug 4, racing: whatever the timing, a page is whole or the epoch raises UsageError."""
    for attempt in range(6):
        loader = dh_tf.TableLoader(table, "Id", batch_size=1000, page_rows=10_000, cache=True, reader_threads=2)
        list(loader)  # epoch 0 fills the cache: epoch 1 reads it on both threads
        directory = loader.cache_directory
        seen: list[np.ndarray] = []
        closer = threading.Timer(0.002 * attempt, loader.close)
        closer.start()
        with contextlib.suppress(dh_tf.UsageError):
            seen.extend(loader)
        closer.join()
        got = np.concatenate(seen) if seen else np.empty(0, np.int64)
        assert np.array_equal(got, np.arange(len(got)))  # every batch delivered was whole and in order
        assert loader.cache_directory is None and not os.path.exists(directory)  # removed by the last reader


@pytest.mark.parametrize("shuffle", [False, True])
def test_cached_numpy_batches_are_writable_and_writing_them_changes_no_later_epoch(table, shuffle):
    """Cached pages are private (copy-on-write) mappings of the files (NOTE [ Mapped cache reads ])."""
    with dh_tf.TableLoader(table, ["X", "Id"], "Id", batch_size=1000, page_rows=70_000, cache=True,
                           shuffle=shuffle, seed=5) as loader:
        first = [(x.copy(), y.copy()) for x, y in loader]
        for _ in range(2):
            loader.set_epoch(0)
            for (x, y), (x0, y0) in zip(loader, first, strict=True):
                assert x.flags.writeable and y.flags.writeable
                assert x.tobytes() == x0.tobytes() and y.tobytes() == y0.tobytes()
                x[...] = -1.0  # changes this batch only
                y[...] = -1


@pytest.mark.parametrize("shuffle", [False, True])  # mapped spans; one gather from a mapping (EpochCache.gather)
def test_a_cache_file_cut_from_outside_is_a_cache_error_not_a_crash(table, shuffle):
    with dh_tf.TableLoader(table, "Id", batch_size=1000, page_rows=70_000, cache=True, shuffle=shuffle) as loader:
        epoch(loader)
        (path,) = Path(loader.cache_directory).iterdir()
        os.truncate(path, 100_000)
        with pytest.raises(CacheError, match=r"dh_tf cache: '.*field0\.bin' holds 100000 bytes, fewer than "
                                                   r"the \d+ its covered rows need"):
            epoch(loader)
