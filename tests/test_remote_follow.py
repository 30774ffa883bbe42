"""Following a remote (pydeephaven) append-only table: each new row once, in order, bounded, released.

The live tables are server-side ``table_publisher`` blink tables made append-only with
``blink_to_append_only``, on the test session's embedded server, fed from this process; the client
is a real pydeephaven Session to that server over loopback (NOTE [ Remote follow ] in
``dh_tf/sources/remote_follow.py``). Server-side exports are counted on the server's ``SessionState``.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO, TEST_PSK, free_port
from test_remote import connect, publish, server_exports

import dh_tf
from dh_tf.errors import FollowError, RemoteReadError, TableChangeError
from dh_tf.sources.remote_follow import RemoteFollowSource

CHUNK = 1000
DEADLINE_S = 120
_names = itertools.count()


def wait_until(condition, what: str, deadline_s: float = DEADLINE_S) -> None:
    """Waits (polling) until ``condition()`` holds; fails naming ``what`` after a generous deadline."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Feed:
    """A server-side append-only table (``blink_to_append_only`` of a ``table_publisher``), published by name."""

    def __init__(self) -> None:
        from deephaven import dtypes
        from deephaven.stream import blink_to_append_only
        from deephaven.stream.table_publisher import table_publisher

        self.name = f"remote_follow_{next(_names)}"
        self.blink, self.publisher = table_publisher(self.name, {"Id": dtypes.int64, "X": dtypes.double})
        self.table = blink_to_append_only(self.blink)
        publish(self.name, self.table)
        publish(f"{self.name}_blink", self.blink)
        self.rows = 0

    def add(self, chunks: int = 1, wait: bool = True) -> None:
        """Publishes ``chunks`` chunks of ``CHUNK`` rows (Id counting on, X = Id / 2); waits until they are in."""
        from deephaven import new_table
        from deephaven.column import double_col, long_col

        for _ in range(chunks):
            ids = np.arange(self.rows, self.rows + CHUNK, dtype=np.int64)
            self.publisher.add(new_table([long_col("Id", ids.tolist()), double_col("X", (ids / 2).tolist())]))
            self.rows += CHUNK
        if wait:
            wait_until(lambda: self.table.size == self.rows, f"{self.rows} rows in {self.name}")


@pytest.fixture(scope="module")
def session(server):
    session = connect(server.test_port)
    yield session
    session.close()


@pytest.fixture
def feed(server):
    return Feed()


def ids_of(batches) -> np.ndarray:
    return np.concatenate([y for _, y in batches]) if batches else np.empty(0, np.int64)


def test_each_row_once_in_order_from_now_and_from_the_beginning(feed, session):
    feed.add(2)
    table = session.open_table(feed.name)
    now = dh_tf.follow(table, ["X"], "Id", batch_size=700, start="now", max_rows=18_000, page_rows=1500)
    beginning = dh_tf.follow(table, ["X"], "Id", batch_size=700, start="beginning", max_rows=20_000)
    assert now.kind == beginning.kind == "append-only"
    assert isinstance(now.source, RemoteFollowSource)
    got: dict[str, list] = {"now": [], "beginning": []}

    def consume(name, follower):
        got[name] = list(follower)

    threads = [threading.Thread(target=consume, args=item) for item in (("now", now), ("beginning", beginning))]
    for thread in threads:
        thread.start()
    for _ in range(18):  # 18 more chunks, published while both follow
        feed.add(1, wait=False)
    for thread in threads:
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "a follower did not get all its rows"
    for name, first in (("now", 2 * CHUNK), ("beginning", 0)):
        ids = ids_of(got[name])
        assert np.array_equal(ids, np.arange(first, 20 * CHUNK)), name  # each once, in arrival order
        x = np.concatenate([x for x, _ in got[name]])
        assert x.dtype == np.float32 and np.array_equal(x[:, 0], (ids / 2).astype(np.float32))
        assert all(len(y) == 700 for _, y in got[name][:-1])
    table.close()


def test_exports_return_to_start_after_stop_break_and_max_rows(feed, session):
    feed.add(5)
    table = session.open_table(feed.name)
    start = server_exports(session)
    for _ in dh_tf.follow(table, "X", "Id", batch_size=100, start="beginning", max_rows=2500, page_rows=300):
        assert start <= server_exports(session) <= start + 2  # a count (view + snapshot) or one slice
    wait_until(lambda: server_exports(session) == start, "exports released after max_rows")
    follower = dh_tf.follow(table, "X", "Id", batch_size=100, start="beginning", page_rows=300)
    for count, _ in enumerate(follower):
        if count == 7:
            break
    wait_until(lambda: server_exports(session) == start, "exports released after a break")
    follower = dh_tf.follow(table, "X", "Id", batch_size=100, start="now", max_wait=0.05)
    batches = iter(follower)
    stopper = threading.Thread(target=follower.stop)  # stop from another thread while it waits for rows
    stopper.start()
    assert list(batches) == []
    stopper.join(DEADLINE_S)
    assert not stopper.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "dh_tf-follow-remote"]
    assert server_exports(session) == start
    table.close()


def test_a_slow_consumer_leaves_the_rows_on_the_server(feed, session):
    """Back-pressure: the table grows to 10x the queue; pages queued and exports stay bounded."""
    table = session.open_table(feed.name)
    start = server_exports(session)
    follower = dh_tf.follow(table, "X", "Id", batch_size=100, prefetch=1, page_rows=200, max_rows=6000)
    batches = iter(follower)
    feed.add(6)  # 6000 rows: 30x the queue (1 page of 200 rows)
    wait_until(lambda: follower.queued_pages == 1, "the first page queued")
    got = []
    for y in (y for _, y in batches):
        got.append(y)
        time.sleep(0.002)  # a slow consumer; what is checked is the bound, not a time
        assert follower.max_queued_pages <= 1
        ahead = follower._feed.read_rows - follower.delivered_rows
        assert ahead <= 2 * 200 + 100, f"the feed read {ahead} rows ahead of the consumer"
        assert server_exports(session) <= start + 2
    assert np.array_equal(np.concatenate(got), np.arange(6000))
    wait_until(lambda: server_exports(session) == start, "exports released")
    table.close()


def test_dataset_follows_a_remote_table(feed, session):
    tf = pytest.importorskip("tensorflow")
    feed.add(3)
    table = session.open_table(feed.name)
    ds = dh_tf.to_dataset(table, ["X"], "Id", follow=True, batch_size=500, start="beginning", max_rows=3000)
    ids = np.concatenate([y.numpy() for _, y in ds])
    assert np.array_equal(ids, np.arange(3000))
    assert ds.element_spec[0] == tf.TensorSpec((None, 1), tf.float32)
    table.close()


def test_interval_is_an_option_of_follow_and_of_the_source(feed, session):
    table = session.open_table(feed.name)
    polled = dh_tf.follow(table, "X", "Id", interval_s=0.05)
    assert polled.source.interval_s == 0.05 and dh_tf.follow(table, "X").source.interval_s == 0.5
    polled.stop()
    source = RemoteFollowSource(table, interval_s=0.05)
    follower = dh_tf.follow(source, "X", "Id", batch_size=250, max_rows=1000)
    batches = iter(follower)
    feed.add(1)
    assert np.array_equal(ids_of(list(batches)), np.arange(1000))
    with pytest.raises(ValueError, match=r"follow: interval_s must be None for a followable source \(got interval_s=0.1\)"):
        dh_tf.follow(source, "X", interval_s=0.1)
    with pytest.raises(ValueError, match=r"follow: interval_s must be > 0 seconds"):
        RemoteFollowSource(table, interval_s=0)
    with pytest.raises(TypeError, match=r"follow: interval_s must be a number of seconds"):
        RemoteFollowSource(table, interval_s="1s")
    table.close()


def test_closed_session_fails_with_remote_read_error_naming_the_server(feed, server):
    other = connect(server.test_port)
    table = other.open_table(feed.name)
    follower = dh_tf.follow(table, "X", "Id", batch_size=100, start="beginning", max_wait=0.05)
    batches = iter(follower)
    feed.add(1)
    next(batches)
    other.close()
    feed.add(1, wait=False)
    with pytest.raises(RemoteReadError, match=rf"follow: .* Deephaven server localhost:{server.test_port} failed"):
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            next(batches)
    assert isinstance(RemoteReadError("x"), ConnectionError)


def test_tables_that_cannot_be_followed_remotely_are_refused_naming_why(feed, session, server):
    from deephaven import time_table

    publish("remote_follow_add_only", time_table("PT1s").without_attributes(["AppendOnly"]).with_attributes(
        {"AddOnly": True}))
    add_only = session.open_table("remote_follow_add_only")
    with pytest.raises(ValueError, match=r"follow: a remote add-only table cannot be followed: .* a Barrage "
                       r"subscription could, but would keep a client copy of every row"):
        dh_tf.follow(add_only, "Timestamp")
    static = session.empty_table(10).update("X = (double)i")
    with pytest.raises(ValueError, match=r"follow: table must be a refreshing \(live\) table, but it is static"):
        dh_tf.follow(static, "X")
    ticking = session.time_table("PT1s").update("X = (double)ii").last_by()
    with pytest.raises(ValueError, match=r"follow: a remote table must be append-only or blink to be followed"):
        dh_tf.follow(ticking, "X")
    other = connect(server.test_port)
    table = other.open_table(feed.name)
    other.close()
    with pytest.raises(ValueError, match=r"follow: the table's pydeephaven Session .* is closed"):
        dh_tf.follow(table, "X")
    for t in (add_only, static, ticking):
        t.close()


def test_garbage_collection_releases_the_exports_and_the_thread(feed, session):
    feed.add(3)
    table = session.open_table(feed.name)
    start = server_exports(session)
    follower = dh_tf.follow(table, "X", "Id", batch_size=100, start="beginning", page_rows=200)
    batches = iter(follower)
    next(batches)
    del follower, batches  # no stop(), no break: dropped
    gc.collect()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == "dh_tf-follow-remote"], "the thread ended")
    wait_until(lambda: server_exports(session) == start, "exports released after garbage collection")
    table.close()


def test_an_append_only_table_that_removes_rows_is_refused(server, session):
    """The server fails a table marked append-only that removes rows, and refuses its slices: FollowError.

    A failed table's count stays as it was, so the failure is seen when rows are left to read (here: a
    slow consumer); a table that fails after every row was read looks idle (NOTE [ Remote follow ]).
    """
    from deephaven import time_table

    name = f"remote_follow_shrinking_{next(_names)}"
    publish(name, time_table("PT0.1s").update("X = (double)ii").tail(20).with_attributes({"AppendOnly": True}))
    table = session.open_table(name)
    start = server_exports(session)
    follower = dh_tf.follow(RemoteFollowSource(table, interval_s=0.05), "X", batch_size=1, start="beginning",
                            prefetch=1, page_rows=1)
    timer = threading.Timer(DEADLINE_S, follower.stop)  # a bound on the test: a hang ends the loop, failing it
    timer.start()
    got = []
    try:
        with pytest.raises((FollowError, TableChangeError), match=rf"follow: the append-only table on Deephaven server "
                           rf"localhost:{server.test_port} (failed on the server|shrank from).* the server fails a table "
                           r"marked append-only or blink that modifies or removes rows.*follow reads only tables that "
                           r"never modify, remove or shift rows"):
            for x in follower:  # slower than the table fails (at its 21st row): rows are left to read then
                got.append(float(x[0]))
                time.sleep(0.5)
    finally:
        timer.cancel()
    assert got == [float(i) for i in range(len(got))] and len(got) < 20
    # Ours are all released; the one left is the slice the server refused: pydeephaven does not release the
    # ticket of an operation that failed, so the server keeps that failed export until the Session closes.
    wait_until(lambda: server_exports(session) == start + 1, "exports released after the error")
    time.sleep(1)
    assert server_exports(session) == start + 1
    table.close()


def close_quietly(session) -> None:
    """Closes a Session whose server is gone (pydeephaven raises when it cannot tell the server)."""
    with contextlib.suppress(Exception):
        session.close()


SERVER_SCRIPT = """
import sys, time
from dh_tf.server import start_server
start_server(heap="512m", port=int(sys.argv[1]), psk=sys.argv[2])
import __main__
from deephaven import time_table
__main__.appended = time_table("PT0.05s").update("X = (double)ii")
__main__.blinking = time_table("PT0.05s", blink_table=True).update("X = (double)ii")
time.sleep(600)
"""


def test_a_server_killed_mid_follow_gives_remote_read_error_naming_it():
    """A server in its own process, killed while an append-only and a blink table are followed."""
    from pydeephaven import Session

    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(port), TEST_PSK], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        session, tables = None, None
        deadline = time.monotonic() + 300
        while tables is None:  # the server starts, then its script makes the tables
            assert process.poll() is None and time.monotonic() < deadline, "the server process did not start"
            try:
                session = session or Session(
                    port=port, auth_type="io.deephaven.authentication.psk.PskAuthenticationHandler", auth_token=TEST_PSK
                )
                tables = {name: session.open_table(name) for name in ("appended", "blinking")}
            except Exception:
                time.sleep(1)
        followers = {name: dh_tf.follow(table, "X", batch_size=10, max_wait=0.05) for name, table in tables.items()}
        assert [f.kind for f in followers.values()] == ["append-only", "blink"]
        streams = {name: iter(follower) for name, follower in followers.items()}
        for stream in streams.values():
            next(stream)  # both deliver
        process.kill()
        process.wait(DEADLINE_S)
        timer = threading.Timer(DEADLINE_S, lambda: [f.stop() for f in followers.values()])  # a bound on the test
        timer.start()
        try:
            for stream in streams.values():
                with pytest.raises(RemoteReadError, match=rf"follow: .* from Deephaven server localhost:{port} failed"):
                    for _ in stream:
                        pass
        finally:
            timer.cancel()
        closing = threading.Thread(target=close_quietly, args=(session,), daemon=True)  # the server is gone
        closing.start()
        closing.join(30)
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(DEADLINE_S)
