"""Follow mode (NOTE [ Follow mode ] in dh_tf/live/follow.py): live append-only and blink tables, real engine.

A publisher thread adds rows with consecutive ids (0..N-1) through ``table_publisher`` at a known
rate; the tests assert which ids arrive, in which batches, and that every way out removes the
listener and ends the reader thread. Every wait is on a condition, with a generous deadline; no
test asserts how fast anything happens.
"""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import dh_tf
import dh_tf.live.follow as follow_mod
from dh_tf.errors import FollowError
from dh_tf.live.follow import follow
from dh_tf.sources.jvm_threads import entered  # one context object, several threads
from dh_tf.tf.follow_dataset import follow_dataset

DEADLINE_S = 15


@pytest.fixture(scope="module")
def fast_update_graph(server):
    """Cycles every 10 ms instead of 1 s, so tests see many update cycles in little time."""
    import jpy
    from deephaven.execution_context import get_exec_ctx

    graph = jpy.cast(
        get_exec_ctx().update_graph.j_update_graph,
        jpy.get_type("io.deephaven.engine.updategraph.impl.PeriodicUpdateGraph"),
    )
    before = graph.getTargetCycleDurationMillis()
    graph.setTargetCycleDurationMillis(10)
    yield
    graph.setTargetCycleDurationMillis(before)


class Publisher:
    """Publishes ``chunks`` tables of ``rows`` rows (Id consecutive from 0, X = Id / 2) every ``interval_s``."""

    def __init__(self, chunks: int, rows: int, interval_s: float = 0.01, append_only: bool = True) -> None:
        from deephaven import dtypes
        from deephaven.execution_context import get_exec_ctx
        from deephaven.stream import blink_to_append_only
        from deephaven.stream.table_publisher import table_publisher

        self.blink, self.publisher = table_publisher(
            "dh_tf-test", {"Id": dtypes.int64, "X": dtypes.double, "B": dtypes.double}
        )
        self.table = blink_to_append_only(self.blink) if append_only else self.blink
        self.chunks, self.rows, self.interval_s = chunks, rows, interval_s
        self.num_rows = chunks * rows
        self.published = 0
        self._ctx = get_exec_ctx()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-publisher", daemon=True)

    def publish(self, rows: int) -> None:
        from deephaven import new_table
        from deephaven.column import double_col, long_col

        ids = np.arange(self.published, self.published + rows)
        with entered(self._ctx):  # new_table, not a formula with the base in it: that would compile a class per call
            self.publisher.add(
                new_table([long_col("Id", ids.tolist()), double_col("X", (ids / 2).tolist()), double_col("B", (-ids / 2).tolist())])
            )
        self.published += rows

    def _run(self) -> None:
        for _ in range(self.chunks):
            if self._halt.is_set():
                return
            self.publish(self.rows)
            time.sleep(self.interval_s)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(DEADLINE_S)


def has_listeners(table) -> bool:
    import jpy

    return bool(jpy.cast(table.j_table, jpy.get_type("io.deephaven.engine.table.impl.BaseTable")).hasListeners())


def follow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == follow_mod.THREAD_NAME]


def wait_for(condition, message: str, deadline_s: float = DEADLINE_S) -> None:
    """Waits until ``condition()`` holds; fails with ``message`` after ``deadline_s`` (a bound, not a speed)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def assert_clean(table) -> None:
    """No listener left on the table (the blink_to_append_only adapter listens to its blink parent only),
    and no reader thread (a follower dropped by the garbage collector ends its reader without waiting)."""
    wait_for(lambda: not has_listeners(table) and follow_threads() == [], "a listener or reader thread was left")


def collect(follower, deadline_s: float = DEADLINE_S) -> list:
    batches = []
    deadline = time.monotonic() + deadline_s
    for batch in follower:
        batches.append(batch)
        assert time.monotonic() < deadline, "follow took too long"
    return batches


@pytest.mark.parametrize("append_only", [True, False], ids=["append-only", "blink"])
def test_every_published_row_once_in_order(fast_update_graph, append_only):
    source = Publisher(chunks=60, rows=37, interval_s=0.02, append_only=append_only)
    follower = follow(source.table, ["X", "B"], "Id", batch_size=64, max_rows=source.num_rows, page_rows=50)
    assert follower.kind == ("append-only" if append_only else "blink")
    timer = threading.Timer(DEADLINE_S, follower.stop)  # a bound on the test, not part of it
    timer.start()
    try:
        iterator = iter(follower)
        source.start()
        batches = collect(iterator)
    finally:
        timer.cancel()
        source.stop()
    ids = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(ids, np.arange(source.num_rows))
    assert [len(y) for _, y in batches] == [64] * (source.num_rows // 64) + [source.num_rows % 64]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (64, 2) and x.flags["C_CONTIGUOUS"]
    assert y.dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), np.stack([ids / 2, -ids / 2], axis=1))
    assert follower.dropped_rows == 0 and follower.delivered_rows == source.num_rows
    assert follower.max_queued_pages <= follower.prefetch
    assert_clean(source.table)


def test_start_now_skips_and_beginning_includes_existing_rows(fast_update_graph):
    source = Publisher(chunks=3, rows=10)
    source.publish(25)
    deadline = time.monotonic() + DEADLINE_S
    while source.table.size < 25:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    now = follow(source.table, "X", "Id", batch_size=10, max_rows=30)
    beginning = follow(source.table, "X", "Id", batch_size=10, max_rows=55, start="beginning")
    source.start()
    try:
        now_ids = np.concatenate([y for _, y in collect(now)])
        beginning_ids = np.concatenate([y for _, y in collect(beginning)])
    finally:
        source.stop()
    np.testing.assert_array_equal(now_ids, np.arange(25, 55))
    np.testing.assert_array_equal(beginning_ids, np.arange(55))
    assert_clean(source.table)


def test_slow_consumer_of_append_only_table_is_back_pressured(fast_update_graph):
    source = Publisher(chunks=30, rows=40, interval_s=0.005)
    follower = follow(source.table, "X", "Id", batch_size=20, max_rows=source.num_rows, prefetch=2, page_rows=30)
    iterator = iter(follower)
    source.start()
    ids = []
    try:
        for _, y in iterator:
            ids.append(y)
            # Slower than the producer: after each batch, wait until the queue is full again (the rest of
            # the rows wait in the table) or every row is in.
            wait_for(lambda: follower.queued_pages == 2 or source.done(), "the queue neither filled nor the source ended")
            assert follower.queued_pages <= 2
    finally:
        source.stop()
    np.testing.assert_array_equal(np.concatenate(ids), np.arange(source.num_rows))
    assert follower.dropped_rows == 0 and follower.max_queued_pages <= 2
    assert_clean(source.table)


def test_slow_consumer_of_blink_table_drops_newest_rows_and_counts_them(fast_update_graph):
    source = Publisher(chunks=40, rows=100, interval_s=0.01, append_only=False)
    follower = follow(source.table, "X", "Id", batch_size=25, prefetch=2, page_rows=50, max_wait=0.05)
    iterator = iter(follower)
    source.start()
    ids = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        for _, y in iterator:
            ids.append(y)
            # Slower than the producer: after each batch, wait until the queue is full (so the update
            # cycles that follow drop rows) or the source has published everything.
            wait_for(lambda: follower.queued_pages == 2 or source.done(), "the queue neither filled nor the source ended")
            assert follower.queued_pages <= 2
            if source.done() and follower.delivered_rows + follower.dropped_rows == source.num_rows:
                break
            assert time.monotonic() < deadline, "rows neither delivered nor counted as dropped"
    finally:
        source.stop()
        iterator.close()
    delivered = np.concatenate(ids)
    assert follower.dropped_rows > 0, "the consumer was slower, yet nothing was dropped"
    assert len(delivered) + follower.dropped_rows == source.num_rows
    assert np.all(np.diff(delivered) > 0), "delivered rows out of order or twice"
    assert set(delivered.tolist()) <= set(range(source.num_rows))
    assert follower.max_queued_pages <= 2
    assert_clean(source.table)


def test_blink_overflow_error_policy(fast_update_graph):
    source = Publisher(chunks=10, rows=100, append_only=False)
    follower = follow(source.table, "X", batch_size=10, prefetch=1, page_rows=10, on_overflow="error")
    iterator = iter(follower)
    source.start()
    wait_for(source.done, "the source did not publish its rows")  # the consumer is away while the table ticks
    with pytest.raises(FollowError, match=r"fell behind a blink table; \d+ rows .* on_overflow='error'"):
        collect(iterator)
    source.stop()
    assert follower.dropped_rows > 0
    assert_clean(source.table)


def test_max_wait_flushes_a_partial_batch(fast_update_graph):
    source = Publisher(chunks=1, rows=10)
    follower = follow(source.table, "X", "Id", batch_size=64, max_wait=0.2)
    iterator = iter(follower)
    source.publish(10)
    timer = threading.Timer(DEADLINE_S, follower.stop)
    timer.start()
    try:
        x, y = next(iterator)
    finally:
        timer.cancel()
    np.testing.assert_array_equal(y, np.arange(10))
    assert x.shape == (10,) and x.dtype == np.float32
    follower.stop()
    assert list(iterator) == []
    assert_clean(source.table)


def test_without_max_wait_a_partial_batch_is_never_yielded(fast_update_graph):
    source = Publisher(chunks=1, rows=10)
    follower = follow(source.table, "X", "Id", batch_size=64)
    iterator = iter(follower)
    source.publish(10)

    def stop_once_the_rows_are_pending() -> None:
        # The 10 rows were queued as a page and the consumer took that page: they wait in a partial batch.
        wait_for(lambda: follower.max_queued_pages >= 1 and follower.queued_pages == 0, "the rows never arrived")
        follower.stop()

    stopper = threading.Thread(target=stop_once_the_rows_are_pending, name="test-stopper", daemon=True)
    stopper.start()
    assert list(iterator) == []
    stopper.join(DEADLINE_S)
    assert follower.delivered_rows == 0
    assert_clean(source.table)


WAYS_OUT = ["stop", "max_rows", "max_batches", "break", "table_fails", "close_generator"]


@pytest.mark.parametrize("append_only", [True, False], ids=["append-only", "blink"])
@pytest.mark.parametrize("way_out", WAYS_OUT)
def test_every_way_out_removes_the_listener_and_joins_threads(fast_update_graph, append_only, way_out):
    source = Publisher(chunks=400, rows=20, interval_s=0.01, append_only=append_only)
    limits = {"max_rows": {"max_rows": 50}, "max_batches": {"max_batches": 3}}.get(way_out, {})
    follower = follow(source.table, "X", "Id", batch_size=10, **limits)
    iterator = iter(follower)
    source.start()
    try:
        if way_out == "stop":
            batches = [next(iterator)]  # rows arrive; then stop() from another thread ends the iteration
            stopper = threading.Thread(target=follower.stop, name="test-stopper", daemon=True)
            stopper.start()
            batches += collect(iterator)
            stopper.join(DEADLINE_S)
            assert not stopper.is_alive(), "stop() did not return"
        elif way_out in ("max_rows", "max_batches"):
            batches = collect(iterator)
            assert sum(len(y) for _, y in batches) == (50 if way_out == "max_rows" else 30)
        elif way_out == "break":
            for count, _ in enumerate(iterator):
                if count == 2:
                    break
            del iterator
            gc.collect()
        elif way_out == "close_generator":
            next(iterator)
            iterator.close()
        else:
            next(iterator)
            assert has_listeners(source.table) and len(follow_threads()) == (1 if append_only else 0)
            source.publisher.publish_failure(RuntimeError("feed lost"))
            with pytest.raises(FollowError, match="the table failed: .*feed lost"):
                collect(iterator)
    finally:
        source.stop()
    assert_clean(source.table)
    if way_out == "break":
        assert follower.delivered_batches == 3


def test_table_that_modifies_rows_is_refused_at_build_time(fast_update_graph):
    source = Publisher(chunks=1, rows=1)
    with pytest.raises(ValueError, match=r"follow: table must be append-only, add-only or blink .*none of these"):
        follow(source.table.last_by(), "Id")
    with pytest.raises(ValueError, match="append-only, add-only or blink"):
        follow(source.table.count_by("N"), "N")


def test_table_claiming_add_only_that_modifies_fails_at_the_first_such_update(fast_update_graph):
    source = Publisher(chunks=50, rows=5, interval_s=0.02)
    latest = source.table.last_by().with_attributes({"AddOnly": True})
    follower = follow(latest, "Id", batch_size=1, start="beginning")
    assert follower.kind == "add-only"
    iterator = iter(follower)
    source.start()
    try:
        # Our listener names the change, unless the engine's own add-only check fails the table first.
        with pytest.raises((ValueError, FollowError), match=r"add-only table modified 1 rows|the table failed"):
            collect(iterator)
    finally:
        source.stop()
    assert_clean(latest)


def test_bad_input(fast_update_graph):
    from deephaven import new_table
    from deephaven.column import double_col

    static = new_table([double_col("X", [1.0, 2.0])])  # no formula: nothing to compile
    with pytest.raises(ValueError, match=r"follow: table must be a refreshing .* it is static; .*to_dataset"):
        follow(static, "X")
    source = Publisher(chunks=1, rows=1)
    blink = Publisher(chunks=1, rows=1, append_only=False)
    with pytest.raises(ValueError, match=r"max_wait must be a number of seconds >= 0 or None \(got -1\)"):
        follow(source.table, "X", max_wait=-1)
    with pytest.raises(ValueError, match=r"max_wait .* \(got nan\)"):
        follow(source.table, "X", max_wait=float("nan"))
    with pytest.raises(TypeError, match=r"max_wait must be a number .* \(got '1s' of type str\)"):
        follow(source.table, "X", max_wait="1s")
    with pytest.raises(TypeError, match=r"max_wait .* \(got True of type bool\)"):
        follow(source.table, "X", max_wait=True)
    with pytest.raises(ValueError, match=r"start must be one of \['now', 'beginning'\] \(got 'end'\)"):
        follow(source.table, "X", start="end")
    with pytest.raises(ValueError, match="start='beginning' needs an append-only or add-only table, but this is a blink"):
        follow(blink.table, "X", start="beginning")
    with pytest.raises(ValueError, match=r"on_overflow must be one of \['drop', 'error'\] \(got 'block'\)"):
        follow(blink.table, "X", on_overflow="block")
    with pytest.raises(ValueError, match=r"page_rows must be an int in \[1, 65536\] \(got 100000\)"):
        follow(source.table, "X", page_rows=100_000)
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['Nope'\]"):
        follow(source.table, "Nope")
    with pytest.raises(TypeError, match="batch_size must be an int >= 1"):
        follow(source.table, "X", batch_size=2.5)
    with pytest.raises(ValueError, match="max_rows must be an int >= 1"):
        follow(source.table, "X", max_rows=0)
    follower = follow(source.table, "X")
    iter(follower).close()
    with pytest.raises(RuntimeError, match="a Follower is iterated once"):
        iter(follower)
    assert_clean(source.table)


def test_live_dataset_trains_keras_with_steps_per_epoch(fast_update_graph):
    import tensorflow as tf
    from deephaven import dtypes, new_table
    from deephaven.column import double_col, int_col
    from deephaven.execution_context import get_exec_ctx
    from deephaven.stream.table_publisher import table_publisher

    blink, publisher = table_publisher("dh_tf-test-fit", {"X0": dtypes.double, "X1": dtypes.double, "Y": dtypes.int32})
    ctx = get_exec_ctx()
    halt = threading.Event()
    rng = np.random.default_rng(0)

    def produce() -> None:
        while not halt.is_set():
            x = rng.normal(size=(256, 2))
            y = (x[:, 0] > 0).astype(np.int32)
            with entered(ctx):
                publisher.add(new_table([double_col("X0", x[:, 0].tolist()), double_col("X1", x[:, 1].tolist()),
                                         int_col("Y", y.tolist())]))
            time.sleep(0.01)

    producer = threading.Thread(target=produce, name="test-producer", daemon=True)
    producer.start()
    try:
        ds = dh_tf.to_dataset(blink, ["X0", "X1"], "Y", follow=True, batch_size=64, label_dtype="float32", prefetch=8)
        assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
        assert ds.element_spec[0].shape.as_list() == [None, 2] and ds.element_spec[1].dtype == tf.float32
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss="binary_crossentropy", metrics=["accuracy"])
        history = model.fit(ds, steps_per_epoch=25, epochs=3, verbose=0, shuffle=False)
        assert history.history["accuracy"][-1] > 0.9
        del ds, history
    finally:
        halt.set()
        producer.join(DEADLINE_S)
    deadline = time.monotonic() + DEADLINE_S
    while has_listeners(blink):
        gc.collect()
        assert time.monotonic() < deadline, "the dataset's follower kept its listener"
        time.sleep(0.05)
    assert follow_threads() == []


def test_live_dataset_each_pass_is_a_new_follower(fast_update_graph):
    import tensorflow as tf

    source = Publisher(chunks=300, rows=10, interval_s=0.01)
    ds = dh_tf.to_dataset(source.table, "X", "Id", follow=True, batch_size=10, max_batches=2)
    assert ds.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    source.start()
    try:
        passes = [[y.numpy() for _, y in ds] for _ in range(2)]  # the second pass builds its follower on a TF thread
    finally:
        source.stop()
    for batches in passes:
        assert [len(y) for y in batches] == [10, 10]
        ids = np.concatenate(batches)
        np.testing.assert_array_equal(ids, np.arange(ids[0], ids[0] + 20))
    assert passes[1][0][0] >= passes[0][1][-1] + 1
    gc.collect()
    assert_clean(source.table)


def test_follow_dataset_is_deprecated_for_to_dataset_follow_true(fast_update_graph):
    import tensorflow as tf

    source = Publisher(chunks=300, rows=10, interval_s=0.01)
    with pytest.warns(DeprecationWarning, match=r"follow_dataset is deprecated; use dh_tf.to_dataset\(table, features, "
                      r"label, follow=True, ...\), which takes the same options"):
        ds = follow_dataset(source.table, "X", "Id", batch_size=10)
    assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    source.start()
    try:
        ids = np.concatenate([y.numpy() for _, y in ds.take(3)])
    finally:
        source.stop()
    np.testing.assert_array_equal(ids, np.arange(ids[0], ids[0] + 30))
    with pytest.raises(TypeError, match=r"follow must be True or False \(got 'yes' of type str\)"):
        dh_tf.to_dataset(source.table, "X", follow="yes")
    with pytest.raises(ValueError, match=r"^to_dataset: max_wait must be a number of seconds >= 0 or None \(got -1\)$"):
        dh_tf.to_dataset(source.table, "X", follow=True, max_wait=-1)
    gc.collect()
    assert_clean(source.table)


def test_array_columns_are_refused_in_follow_mode(fast_update_graph):
    source = Publisher(chunks=1, rows=1)
    source.publish(3)
    table = source.table.update_view("A = new double[] {X, B}")
    deadline = time.monotonic() + DEADLINE_S
    while table.size < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(TypeError, match=r"follow mode reads scalar columns only; array column\(s\) 'A' \(double\[\]\)"):
        follow(table, "A")
