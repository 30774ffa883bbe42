"""The decoded epoch cache (NOTE [ Epoch cache ] in reading/epoch_cache.py): exact, never stale, owned and cleaned up."""

from __future__ import annotations

import contextlib
import gc
import mmap
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
    assert directory.parent == tmp_path
    epoch(loader)
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["field0.bin", "owner.lock"] and (directory / "field0.bin").stat().st_size == 300_017 * 4
    loader.close()
    loader.close()  # twice is safe
    assert not directory.exists() and list(tmp_path.iterdir()) == []
    assert len(epoch(loader)) == 301  # still reads, from the table
    loader = dh_tf.TableLoader(table, "Id", batch_size=1000, cache=str(tmp_path))
    directory = Path(loader.cache_directory)
    epoch(loader)
    assert directory.is_dir()
    del loader
    gc.collect()
    assert not directory.exists()


def test_to_dataset_passes_cache_through_to_fit(table, no_engine_reads):
    import keras

    ds = dh_tf.to_dataset(table, ["X"], "Id", batch_size=4096, cache=True, label_dtype="float32")
    directory = ds.dh_tf_loader.cache_directory
    assert not os.path.exists(directory)  # made by the first epoch, not by to_dataset
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    first = np.concatenate([y.numpy() for _, y in ds])
    assert os.path.isdir(directory)
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
    (1, TypeError, r"cache must be False, True \(the user cache directory\) or a directory path \(got 1 of type int\)"),
    (b"/tmp", TypeError, r"cache must be False, True .* \(got b'/tmp' of type bytes\)"),
    ("/no/such/dir", ValueError, r"cache directory '/no/such/dir' does not exist or is not a directory"),
    # root may write there: then procfs, 0 bytes free, is refused for its room
    ("/proc/self", (ValueError, OSError), r"cache directory '/proc/self' is not writable|"
                                          r"no room for the epoch cache in '/proc/self': .* free 0 bytes there"),
])
def test_bad_cache_arguments(table, value, error, message):
    with pytest.raises(error, match=message):
        dh_tf.TableLoader(table, "Id", cache=value)


FULL_DISK_SCRIPT = """
import os, subprocess, sys
import numpy as np
from dh_tf.errors import CacheSpaceError
from dh_tf.reading.epoch_cache import EpochCache
from dh_tf.reading.layout import build_layout

layout = build_layout({"Id": "long", "X": "float"}, ["Id", "X"], None, None, dtype="float32", label_dtype=None,
                      nulls="error")


def fill(disk):  # takes every free byte
    fd = os.open(os.path.join(disk, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError:
        pass
    os.close(fd)


root = sys.argv[1]
for name, options, rows in (("small", "size=64k", 300_017), ("filled", "size=1m", 50_000),
                            ("no-inodes", "size=4m,nr_inodes=2", 50_000), ("cut", "size=1m", 50_000)):
    disk = os.path.join(root, name)
    os.mkdir(disk)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", disk], check=True)
    if name == "no-inodes":
        os.mkdir(os.path.join(disk, "taken"))  # the last inode: the cache's directory gets ENOSPC
    try:
        cache = EpochCache(disk, layout, rows, "TableLoader")  # "small": refused here, creating nothing
        print(name, "built |", sorted(os.listdir(disk)))
        if name == "filled":
            fill(disk)  # the disk filled between the constructor and the first epoch
        cache.create()
        os.truncate(cache.paths[0], 0)  # "cut": the reserved file cut from outside, then the disk filled
        fill(disk)
        cache.write([(0, rows)], [np.zeros((rows, 2), np.float32)])
    except CacheSpaceError as error:
        print(name, "|", error, "|", sorted(os.listdir(disk)) if name != "cut" else "")
"""


def test_no_room_is_a_cache_space_error_when_built_at_the_first_epoch_or_in_a_write(tmp_path):
    """Real full file systems, mounted without root: tmpfs inside a user and mount namespace."""
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", FULL_DISK_SCRIPT,
                           str(tmp_path)], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode and done.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("small | ") and lines[1:] == [
        "filled built | []", lines[2], "no-inodes built | ['taken']", lines[4], "cut built | []", lines[6]]
    for line, name, rows, left, error in (
            (lines[0], "small", 300_017, "[]", ""),
            (lines[2], "filled", 50_000, "['filler']", r" \(No space left on device\)"),  # posix_fallocate
            (lines[4], "no-inodes", 50_000, "['taken']", r" \(No space left on device\)"),  # mkdir
            (lines[6], "cut", 50_000, "", r" \(No space left on device\)")):  # pwrite
        message, listing = line.split(" | ", 1)[1].rsplit(" | ", 1)
        mib = f"{rows * 8 / 2**20:.1f}".replace(".", r"\.")
        assert re.fullmatch(rf"\[Errno 28\] TableLoader: no room for the epoch cache in '.*/{name}': it needs "
                            rf"{rows * 8} bytes \({mib} MiB\) for {rows} rows; free \d+ bytes there, or pass "
                            rf"cache=<a directory on a bigger disk>{error}", message), message
        assert listing == left  # nothing left behind
    assert isinstance(CacheSpaceError(), OSError) and isinstance(CacheSpaceError(), dh_tf.Error)


def test_shards_with_a_cache_hold_their_share_and_serve_later_shuffled_epochs_from_disk(table, no_engine_reads):
    """Bug 3: each of n shards reserved the whole table, and with shuffle its cache never filled."""
    kw = dict(batch_size=1000, shuffle=True, seed=3, page_rows=50_000, num_shards=4, cache=True)
    loaders = [dh_tf.TableLoader(table, "Id", **kw, shard_index=k) for k in range(4)]
    first = [np.concatenate(list(loader)) for loader in loaders]
    sizes = [os.path.getsize(Path(loader.cache_directory) / "field0.bin") for loader in loaders]
    assert sizes == [75_004 * 4] * 4  # a quarter of the table each (300_017 // 4 rows), not the whole
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
        path = Path(loader.cache_directory) / "field0.bin"
        os.truncate(path, 100_000)
        with pytest.raises(CacheError, match=r"dh_tf cache: '.*field0\.bin' holds 100000 bytes, fewer than "
                                                   r"the \d+ its covered rows need"):
            epoch(loader)


def test_the_constructor_creates_nothing_and_the_first_epoch_makes_the_files(table, tmp_path):
    dh_tf.TableLoader(table, "Id", batch_size=1000, cache=tmp_path).close()  # closed before any epoch
    loader = dh_tf.TableLoader(table, "Id", batch_size=1000, cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
    batches = iter(loader)
    assert np.array_equal(next(batches), np.arange(1000))
    directory = Path(loader.cache_directory)
    assert list(tmp_path.iterdir()) == [directory]
    assert sorted(p.name for p in directory.iterdir()) == ["field0.bin", "owner.lock"]
    assert (directory / "owner.lock").read_text() == f"pid {os.getpid()}\n"
    batches.close()
    loader.close()
    assert list(tmp_path.iterdir()) == []


def test_cache_true_is_under_the_user_cache_directory_read_at_each_call(table, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with dh_tf.TableLoader(table, "Id", batch_size=1000, cache=True) as loader:
        root = tmp_path / "xdg" / "dh_tf" / "epoch-cache"
        assert Path(loader.cache_directory).parent == root and not (tmp_path / "xdg").exists()
        assert len(epoch(loader)) == 301
        assert list(root.iterdir()) == [Path(loader.cache_directory)]
    assert list(root.iterdir()) == []
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loader = dh_tf.TableLoader(table, "Id", batch_size=1000, cache=True)
    assert Path(loader.cache_directory).parent == tmp_path / "home" / ".cache" / "dh_tf" / "epoch-cache"


def test_epochs_starting_at_once_make_the_files_once(tmp_path):
    from dh_tf.reading.epoch_cache import EpochCache
    from dh_tf.reading.layout import build_layout

    layout = build_layout({"Id": "long"}, ["Id"], None, None, dtype="float32", label_dtype=None, nulls="error")
    cache = EpochCache(str(tmp_path), layout, 1000, "TableLoader")
    start = threading.Barrier(8)

    def begin():
        start.wait()
        cache.create()

    threads = [threading.Thread(target=begin) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.name for p in tmp_path.iterdir()] == [Path(cache.directory).name]
    assert sorted(p.name for p in Path(cache.directory).iterdir()) == ["field0.bin", "owner.lock"]
    cache.close()
    assert list(tmp_path.iterdir()) == []


KILLED_OWNER_SCRIPT = """
import os, signal, sys
from dh_tf.reading.epoch_cache import EpochCache
from dh_tf.reading.layout import build_layout

layout = build_layout({"Id": "long"}, ["Id"], None, None, dtype="float32", label_dtype=None, nulls="error")
cache = EpochCache(sys.argv[1], layout, 1000, "TableLoader")
cache.create()
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no finalizer: the cache stays behind
"""


def test_a_cache_left_by_a_killed_process_is_removed_when_a_new_one_is_made_beside_it(table, tmp_path):
    done = subprocess.run([sys.executable, "-c", KILLED_OWNER_SCRIPT, str(tmp_path)], check=False, timeout=120)
    assert done.returncode == -9
    (stale,) = tmp_path.iterdir()
    assert stale.name.startswith("dh_tf-cache-") and (stale / "owner.lock").is_file()
    (tmp_path / "dh_tf-cache-no-lock").mkdir()  # no lock file (being made): left alone
    (tmp_path / "other").mkdir()
    with dh_tf.TableLoader(table, "Id", batch_size=1000, cache=tmp_path) as alive:
        epoch(alive)  # removes the stale cache; its own lock is held
        with dh_tf.TableLoader(table, "Id", batch_size=1000, cache=tmp_path) as loader, \
                contextlib.closing(iter(loader)) as batches:
            next(batches)
            names = {alive.cache_directory, loader.cache_directory, str(tmp_path / "dh_tf-cache-no-lock"),
                     str(tmp_path / "other")}
            assert {str(p) for p in tmp_path.iterdir()} == names  # the live cache of `alive` stays


def test_no_room_on_disk_or_in_memory_is_refused_when_the_loader_is_built(server, tmp_path):
    from deephaven import empty_table

    huge = empty_table(10**13).update_view(["X = (double)ii"])  # 80 TB of cache, never read
    with pytest.raises(CacheSpaceError, match=rf"TableLoader: no room for the epoch cache in '{re.escape(str(tmp_path))}': it needs "
                                              r"80000000000000 bytes \(76293945\.3 MiB\) for 10000000000000 rows; "
                                              r"free \d+ bytes there, or pass cache=<a directory on a bigger disk>$"):
        dh_tf.TableLoader(huge, "X", dtype="float64", cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with open("/proc/self/mounts") as mounts:
        if not any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts):
            pytest.skip("/dev/shm is not a tmpfs here")
    before = sorted(os.listdir("/dev/shm"))
    with pytest.raises(CacheSpaceError, match=r"no room for the epoch cache in '/dev/shm': it needs 80000000000000 "
                                              r"bytes .* rows; it is on tmpfs, which is memory, and MemAvailable is "
                                              r"\d+ bytes; pass cache=<a directory on a disk>$"):
        dh_tf.TableLoader(huge, "X", dtype="float64", cache="/dev/shm")
    assert sorted(os.listdir("/dev/shm")) == before


def test_predict_table_refuses_cache_and_creates_nothing(table, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for cache in (tmp_path, True):
        with pytest.raises(dh_tf.ArgumentError, match=rf"predict_table: cache must not be given \(got cache="
                                                      rf"{re.escape(repr(cache))}\); every row is scored once, in "
                                                      r"table order; an epoch cache would be written and never read"):
            dh_tf.predict_table(lambda x: x, table, "X", cache=cache)
    assert list(tmp_path.iterdir()) == []


def _mapping_of(array):
    """The mmap under ``array`` (through its chain of bases), or None for an array that owns a copy."""
    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None) if isinstance(array, np.ndarray) else getattr(array, "obj", None)
    return array


def _maps_of(directory):
    with open("/proc/self/maps") as maps:
        return sum(directory in line for line in maps)


def test_past_the_mapping_budget_kept_batches_are_copies_equal_to_the_mapped_ones(table, tmp_path, monkeypatch):
    """Each kept cached page held a mapping per field: 1,024-row pages could pass vm.max_map_count."""
    from dh_tf.reading import mapping_budget

    with dh_tf.TableLoader(table.head(20_000), ["Id", "X"], "Id", batch_size=1024, page_rows=1024,
                           cache=tmp_path) as loader:
        epoch(loader)  # fills the cache
        mapped = epoch(loader)  # every page mapped, kept
        # the last, partial batch is joined from its page's tail (batching.align_groups): a copy anyway
        assert all(_mapping_of(x) is not None and _mapping_of(y) is not None for x, y in mapped[:-1])
        expected = [(x.copy(), y.copy()) for x, y in mapped]
        del mapped
        monkeypatch.setattr(mapping_budget, "MAX_LIVE_MAPPINGS", 6)
        kept = epoch(loader)
        assert _maps_of(loader.cache_directory) <= 6
        mappings = {id(m) for x, y in kept for m in (_mapping_of(x), _mapping_of(y)) if m is not None}
        assert 0 < len(mappings) <= 6 and _mapping_of(kept[-2][0]) is None  # the rest are copies
        assert len(kept) == len(expected) == 20
        for (x, y), (x0, y0) in zip(kept, expected, strict=True):
            assert x.dtype == x0.dtype and x.shape == x0.shape and x.tobytes() == x0.tobytes()
            assert y.dtype == y0.dtype and y.shape == y0.shape and y.tobytes() == y0.tobytes()
            assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous  # copies are aligned page arrays too
