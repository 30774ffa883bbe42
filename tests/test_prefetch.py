"""The prefetch thread: order, bounded look-ahead, errors, and every way out stops the thread."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from dh_tf.prefetch import THREAD_NAME, prefetched


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(autouse=True)
def no_thread_left():
    assert not prefetch_threads()
    yield
    assert not prefetch_threads(), "a prefetch thread outlived its iterator"


class Source:
    """An iterator factory that records how far it was pulled and whether it was closed."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.produced, self.closed, self.thread = n, fail_at, 0, False, None

    def __call__(self):
        self.thread = threading.current_thread()
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise KeyError(f"page {i}")
                self.produced += 1
                yield i
        finally:
            self.closed = True


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_items_arrive_in_order(depth):
    source = Source(50)
    assert list(prefetched(source, depth)) == list(range(50))
    assert source.closed
    assert (source.thread is threading.current_thread()) == (depth == 0)


def test_look_ahead_is_bounded_by_depth():
    source = Source(100)
    iterator = prefetched(source, 3)
    assert next(iterator) == 0
    time.sleep(0.3)
    # one consumed + 3 queued + 1 produced and waiting to be queued
    assert source.produced <= 5
    iterator.close()


def test_break_stops_the_thread_and_closes_the_source():
    source = Source(10_000)
    for item in prefetched(source, 2):
        if item == 3:
            break
    gc.collect()
    assert source.closed and not prefetch_threads()


def test_del_stops_the_thread():
    source = Source(10_000)
    iterator = prefetched(source, 2)
    next(iterator)
    del iterator
    assert source.closed and not prefetch_threads()


def test_consumer_exception_stops_the_thread():
    source = Source(10_000)
    with pytest.raises(ZeroDivisionError):
        for item in prefetched(source, 2):
            if item == 2:
                raise ZeroDivisionError
    assert source.closed and not prefetch_threads()


@pytest.mark.parametrize("depth", [0, 2])
def test_producer_error_reaches_consumer_with_its_type_and_message(depth):
    source = Source(10, fail_at=4)
    got = []
    with pytest.raises(KeyError, match="page 4"):
        got.extend(prefetched(source, depth))
    assert got == [0, 1, 2, 3]
    assert source.closed


def test_keyboard_interrupt_in_consumer_stops_the_thread():
    source = Source(10_000)
    with pytest.raises(KeyboardInterrupt):
        for item in prefetched(source, 2):
            if item == 1:
                raise KeyboardInterrupt
    assert source.closed and not prefetch_threads()
