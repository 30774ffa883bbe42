"""Following a remote (pydeephaven) blink table over Barrage: each new row once, in order, bounded, released.

The blink tables are server-side ``table_publisher`` tables on the test session's embedded server,
fed from this process; the client is a real pydeephaven Session over loopback and a real Barrage
subscription (NOTE [ Remote blink follow ] in ``dh_tf/sources/remote_blink.py``). What the server
holds for a follow is observed on the server: the Session's exports (``SessionState``) and the
listeners on the blink table (the subscription's view listens to it, and the Barrage producer to
the view, so either one left alive keeps a listener there).
"""

from __future__ import annotations

import gc
import itertools
import threading
import time

import numpy as np
import pytest
from test_follow import has_listeners
from test_remote import connect, publish, server_exports
from test_remote_follow import DEADLINE_S, ids_of, wait_until

import dh_tf
from dh_tf.errors import FollowError, NullValueError, RemoteReadError
from dh_tf.sources.remote_blink import THREAD_NAME
from dh_tf.sources.remote_follow import RemoteFollowSource

_names = itertools.count()


class BlinkFeed:
    """A server-side blink table (``table_publisher``), published by name, with nothing else listening to it."""

    def __init__(self) -> None:
        from deephaven import dtypes
        from deephaven.stream.table_publisher import table_publisher

        self.name = f"remote_blink_{next(_names)}"
        self.table, self.publisher = table_publisher(
            self.name, {"Id": dtypes.int64, "X": dtypes.double, "B": dtypes.bool_}
        )
        publish(self.name, self.table)
        self.rows = 0

    def add(self, rows: int, nulls: bool = False) -> None:
        """Publishes ``rows`` rows in one update cycle: Id counting on, X = Id / 2, B = Id is even."""
        from deephaven import new_table
        from deephaven.column import bool_col, double_col, long_col

        ids = list(range(self.rows, self.rows + rows))
        x = [None if nulls and i % 3 == 0 else i / 2 for i in ids]
        self.publisher.add(new_table([long_col("Id", ids), double_col("X", x), bool_col("B", [i % 2 == 0 for i in ids])]))
        self.rows += rows

    def listened(self) -> bool:
        """Whether anything listens to the server-side blink table (a view, a Barrage subscription)."""
        return has_listeners(self.table)


@pytest.fixture(scope="module")
def session(server):
    session = connect(server.test_port)
    yield session
    session.close()


@pytest.fixture
def feed(server):
    return BlinkFeed()


def blink_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def add_once_subscribed(feed: BlinkFeed, follower, rows: int) -> None:
    """Publishes ``rows`` rows once the follower's subscription is up (its snapshot arrived)."""
    wait_until(follower._feed._ready.is_set, "the subscription")
    feed.add(rows)


def assert_released(feed: BlinkFeed, session, exports: int, what: str) -> None:
    """The subscription is gone on the server and in this process (bounded wait)."""
    wait_until(lambda: server_exports(session) == exports, f"{what}: the subscription's view export released")
    wait_until(lambda: not feed.listened(), f"{what}: the subscription or its view still listens on the server")
    wait_until(lambda: not blink_threads(), f"{what}: the subscription thread ended")


def test_each_blink_row_once_in_order_with_nulls_and_booleans(feed, session):
    table = session.open_table(feed.name)
    exports = server_exports(session)
    feed.add(50)  # in the table when the follow starts, or gone already: never delivered (start="now")
    wait_until(lambda: feed.table.size == 50, "the first 50 rows in the blink table")
    follower = dh_tf.follow(table, ["X", "B"], "Id", batch_size=500, max_rows=20_000, page_rows=1000, prefetch=64,
                            nulls={"X": 0.0})
    assert follower.kind == "blink"
    batches = iter(follower)  # subscribed once iter() returns
    assert server_exports(session) == exports + 1  # the subscription's view
    for _ in range(20):  # 20 chunks, one per update cycle at most
        feed.add(1000, nulls=True)
        time.sleep(0.05)
    got = list(batches)
    ids = ids_of(got)
    assert np.array_equal(ids, np.arange(50, 20_050)), "each row once, in arrival order"
    x = np.concatenate([x for x, _ in got])
    assert x.dtype == np.float32 and x.shape == (20_000, 2)
    expected_x = np.where(ids % 3 == 0, 0.0, ids / 2).astype(np.float32)
    assert np.array_equal(x[:, 0], expected_x) and np.array_equal(x[:, 1], (ids % 2 == 0).astype(np.float32))
    assert all(len(y) == 500 for _, y in got)
    assert follower.dropped_rows == 0 and follower.max_queued_pages <= 64
    assert_released(feed, session, exports, "max_rows")
    table.close()


def test_nulls_refused_by_policy_and_the_error_releases_the_subscription(feed, session):
    table = session.open_table(feed.name)
    exports = server_exports(session)
    follower = dh_tf.follow(table, "X", "Id", batch_size=10)
    batches = iter(follower)
    feed.add(30, nulls=True)
    with pytest.raises(NullValueError, match=r"column 'X' \(double\) holds .* and nulls='error'"):
        for _ in batches:
            pass
    assert_released(feed, session, exports, "an error")
    table.close()


def test_stop_break_and_gc_release_the_subscription(feed, session):
    table = session.open_table(feed.name)
    exports = server_exports(session)
    follower = dh_tf.follow(table, "X", "Id", batch_size=100)
    batches = iter(follower)
    assert feed.listened() and len(blink_threads()) == 2  # the reader and the Session watcher
    stopper = threading.Thread(target=follower.stop)  # stop from another thread while it waits for rows
    stopper.start()
    assert list(batches) == []
    stopper.join(DEADLINE_S)
    assert not stopper.is_alive()
    assert_released(feed, session, exports, "stop()")

    follower = dh_tf.follow(table, "X", "Id", batch_size=100)
    adder = threading.Thread(target=add_once_subscribed, args=(feed, follower, 1000))
    adder.start()
    for count, _ in enumerate(follower):
        if count == 3:
            break
    adder.join(DEADLINE_S)
    assert_released(feed, session, exports, "a break")

    follower = dh_tf.follow(table, "X", "Id", batch_size=100)
    batches = iter(follower)
    feed.add(300)
    next(batches)
    del follower, batches  # no stop(): the garbage collector's way out
    gc.collect()
    assert_released(feed, session, exports, "garbage collection")
    table.close()


def test_a_slow_consumer_gets_counted_drops_and_the_queue_stays_bounded(feed, session):
    table = session.open_table(feed.name)
    follower = dh_tf.follow(table, "X", "Id", batch_size=100, prefetch=2, page_rows=100)
    batches = iter(follower)
    feed.add(1000)  # one update of 10 pages into a queue of 2, not consumed yet: 8 pages dropped, counted
    wait_until(lambda: follower.dropped_rows == 800, "the dropped rows counted")
    assert follower.max_queued_pages == 2 and follower._feed.read_rows == 200
    got = [next(batches)[1] for _ in range(2)]
    feed.add(100)
    got.append(next(batches)[1])
    assert np.array_equal(np.concatenate(got), np.r_[np.arange(200), np.arange(1000, 1100)])
    follower.stop()
    strict = dh_tf.follow(table, "X", "Id", batch_size=100, prefetch=2, page_rows=100, on_overflow="error")
    batches = iter(strict)
    feed.add(1000)
    wait_until(lambda: strict.dropped_rows == 800, "the overflow")
    assert [len(next(batches)[1]) for _ in range(2)] == [100, 100]  # the pages queued before the error
    with pytest.raises(FollowError, match=r"fell behind a blink table; 800 rows .* on_overflow='error'"):
        next(batches)
    table.close()


def test_blink_options_refused_naming_why(feed, session):
    table = session.open_table(feed.name)
    with pytest.raises(ValueError, match=r"follow: start='beginning' needs an append-only or add-only table, but this "
                       r"is a blink table"):
        dh_tf.follow(table, "X", start="beginning")
    with pytest.raises(ValueError, match=r"follow: interval_s is for append-only tables .* Barrage update interval"):
        RemoteFollowSource(table, interval_s=0.1)
    source = RemoteFollowSource(table)
    assert source.kind == "blink"
    follower = dh_tf.follow(source, "X", "Id", batch_size=10, max_rows=10)
    batches = iter(follower)
    feed.add(10)
    assert np.array_equal(ids_of(list(batches)), np.arange(10))
    table.close()


def test_a_closed_session_fails_with_remote_read_error_naming_the_server(feed, server):
    other = connect(server.test_port)
    table = other.open_table(feed.name)
    follower = dh_tf.follow(table, "X", "Id", batch_size=10)
    batches = iter(follower)
    feed.add(10)
    next(batches)
    other.close()
    timer = threading.Timer(DEADLINE_S, follower.stop)  # a bound on the test: a hang ends the loop, failing it
    timer.start()
    try:
        with pytest.raises(RemoteReadError, match=rf"follow: .* Deephaven server localhost:{server.test_port} failed"):
            for _ in batches:
                pass
    finally:
        timer.cancel()
    wait_until(lambda: not blink_threads(), "the subscription thread ended")
