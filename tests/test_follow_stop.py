"""Follow mode's ways out never hang and free what the engine side holds (NOTE [ Follow mode ]).

``stop()`` returns while another thread holds the update graph's exclusive lock (an IDE console
command does); dropping the stream does not wait either; and the engine readers a follower opens (the
reader thread's, the blink listener's) are all closed once it stops. Real engine, bounded waits.
"""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
import pytest
import test_follow as base

from dh_tf.live.follow import follow
from dh_tf.sources import engine_read

fast_update_graph = base.fast_update_graph
Publisher = base.Publisher
DEADLINE_S = base.DEADLINE_S
STOP_DEADLINE_S = 10.0
"""How long stop() may take while the lock is held: generous; a correct stop takes one lock poll."""


@pytest.fixture
def open_readers(monkeypatch):
    """The engine column readers opened and not closed yet (a spy on dh_tf's own reader, not a mock)."""
    opened: set[int] = set()
    lock = threading.Lock()
    init, close = engine_read.EngineColumnReader.__init__, engine_read.EngineColumnReader.close

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        with lock:
            opened.add(id(self))

    def spy_close(self):
        close(self)
        with lock:
            opened.discard(id(self))

    monkeypatch.setattr(engine_read.EngineColumnReader, "__init__", spy_init)
    monkeypatch.setattr(engine_read.EngineColumnReader, "close", spy_close)
    return opened


def wait_for(condition, message: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        gc.collect()
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


class ExclusiveLockHolder:
    """Holds the update graph's exclusive lock on its own thread, as an IDE console command does, until released."""

    def __init__(self, table) -> None:
        self._table = table
        self._held = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="test-exclusive-lock", daemon=True)

    def _hold(self) -> None:
        from deephaven.update_graph import exclusive_lock

        with exclusive_lock(self._table):
            self._held.set()
            self._release.wait(4 * DEADLINE_S)

    def __enter__(self) -> ExclusiveLockHolder:
        self._thread.start()
        assert self._held.wait(DEADLINE_S), "could not take the exclusive lock"
        return self

    @property
    def held(self) -> bool:
        return self._thread.is_alive() and not self._release.is_set()

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._thread.join(DEADLINE_S)


def reader_is_taking_the_lock() -> bool:
    """True while a follow reader thread is inside a function that takes the update graph's lock."""
    frames = sys._current_frames()
    for thread in base.follow_threads():
        frame = frames.get(thread.ident)
        while frame is not None:
            if "lock" in frame.f_code.co_qualname.lower():
                return True
            frame = frame.f_back
    return False


def returns_within(action, deadline_s: float) -> bool:
    """Runs ``action`` on a third thread; True if it returned within ``deadline_s`` (the test never hangs)."""
    thread = threading.Thread(target=action, name="test-stopper", daemon=True)
    thread.start()
    thread.join(deadline_s)
    return not thread.is_alive()


@pytest.mark.parametrize("way", ["stop", "drop_iterator"])
def test_stop_returns_while_another_thread_holds_the_exclusive_lock(fast_update_graph, way):
    source = Publisher(chunks=1, rows=1)
    follower = follow(source.table, "X", "Id", batch_size=10)
    box = [iter(follower)]
    wait_for(lambda: base.follow_threads(), "the reader thread did not start")
    source.publish(5)
    wait_for(lambda: source.table.size >= 5, "the rows did not arrive")
    with ExclusiveLockHolder(source.table) as holder:
        wait_for(reader_is_taking_the_lock, "the reader thread never tried to take the lock")
        if way == "stop":
            returned = returns_within(follower.stop, STOP_DEADLINE_S)
        else:
            returned = returns_within(lambda: (box.pop(), gc.collect()), STOP_DEADLINE_S)
        held_throughout = holder.held
    assert returned, f"{way} did not return while another thread held the update graph's exclusive lock"
    assert held_throughout, "the lock was released before stop() returned: the test proved nothing"
    wait_for(lambda: not base.has_listeners(source.table) and not base.follow_threads(), "follower not cleaned up")


def test_reader_thread_frees_its_engine_reader_when_stopped_under_the_lock(fast_update_graph, open_readers):
    source = Publisher(chunks=1, rows=1)
    follower = follow(source.table, "X", batch_size=10)
    iterator = iter(follower)
    wait_for(lambda: len(open_readers) == 1, "the reader thread opened no engine reader")
    with ExclusiveLockHolder(source.table):
        wait_for(reader_is_taking_the_lock, "the reader thread never tried to take the lock")
        assert returns_within(follower.stop, STOP_DEADLINE_S), "stop() did not return under the exclusive lock"
    assert list(iterator) == []
    wait_for(lambda: not open_readers and not base.follow_threads(), f"engine readers left open: {len(open_readers)}")


@pytest.mark.parametrize("append_only", [True, False], ids=["append-only", "blink"])
def test_every_engine_reader_is_closed_after_each_live_dataset_pass(fast_update_graph, open_readers, append_only):
    import dh_tf

    source = Publisher(chunks=2000, rows=10, interval_s=0.005, append_only=append_only)
    ds = dh_tf.to_dataset(source.table, "X", "Id", follow=True, batch_size=10, max_batches=2)
    source.start()
    try:
        for number in range(3):
            batches = [y.numpy() for _, y in ds]
            assert [len(y) for y in batches] == [10, 10], f"pass {number}"
            wait_for(lambda: not open_readers, f"pass {number}: {len(open_readers)} engine readers left open")
    finally:
        source.stop()
    del ds
    wait_for(lambda: not base.has_listeners(source.table) and not base.follow_threads(), "follower not cleaned up")


def test_blink_reader_is_closed_by_stop_and_by_max_rows(fast_update_graph, open_readers):
    source = Publisher(chunks=2000, rows=10, interval_s=0.005, append_only=False)
    source.start()
    try:
        ids = np.concatenate([y for _, y in base.collect(follow(source.table, "X", "Id", batch_size=10, max_rows=30))])
        assert len(ids) == 30 and np.all(np.diff(ids) == 1)
        wait_for(lambda: not open_readers, "max_rows: the blink listener's engine reader was left open")
        follower = follow(source.table, "X", "Id", batch_size=10)
        iterator = iter(follower)
        next(iterator)
        follower.stop()
        wait_for(lambda: not open_readers, "stop(): the blink listener's engine reader was left open")
    finally:
        source.stop()


def test_follow_built_iterated_and_stopped_by_the_thread_holding_the_exclusive_lock(fast_update_graph):
    """As in an IDE console command: the thread holding the exclusive lock builds, starts and stops a follower."""
    from deephaven.update_graph import exclusive_lock

    source = Publisher(chunks=1, rows=1)
    source.publish(5)
    wait_for(lambda: source.table.size >= 5, "the rows did not arrive")
    errors: list[BaseException] = []

    def console_command() -> None:
        try:
            with exclusive_lock(source.table):
                follower = follow(source.table, "X", "Id", batch_size=5, start="beginning")
                stream = iter(follower)  # kept: dropping the stream stops the follower
                wait_for(reader_is_taking_the_lock, "the reader thread never tried to take the lock")
                follower.stop()
                assert list(stream) == []
        except BaseException as error:
            errors.append(error)

    assert returns_within(console_command, STOP_DEADLINE_S + DEADLINE_S), "the console command did not return"
    assert not errors, f"the console command failed: {errors[0]!r}"
    wait_for(lambda: not base.has_listeners(source.table) and not base.follow_threads(), "follower not cleaned up")
