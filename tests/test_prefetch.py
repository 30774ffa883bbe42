"""read_in_order (NOTE [ Reader threads ]): order, errors, and every way out stops and joins the threads.

Pure Python: the items are integers, the readers record on which thread they were opened and closed.
"""

from __future__ import annotations

import gc
import threading

import pytest

from dh_tf.reading.reader_threads import READER_THREAD_NAME, read_in_order


def reader_threads():
    return [t for t in threading.enumerate() if t.name.startswith(READER_THREAD_NAME)]


@pytest.fixture(autouse=True)
def no_thread_left():
    assert not reader_threads()
    yield
    assert not reader_threads(), "a reader thread outlived its iterator"


class Readers:
    """A reader factory; each reader doubles its item, fails at ``fail_at``, and logs open/close threads."""

    def __init__(self, fail_at=None):
        self.fail_at, self.opened, self.closed, self.read = fail_at, [], [], 0
        self.lock = threading.Lock()

    def __call__(self):
        factory = self

        class Reader:
            def read(self, item):
                with factory.lock:
                    factory.read += 1
                if item == factory.fail_at:
                    raise KeyError(f"page {item}")
                return item * 2

            def close(self):
                factory.closed.append(threading.current_thread().name)

        self.opened.append(threading.current_thread().name)
        return Reader()

    def balanced(self):
        return sorted(self.opened) == sorted(self.closed)


WAYS = [(1, 0), (1, 2), (3, 0), (3, 2)]


@pytest.mark.parametrize("threads,prefetch", WAYS)
def test_items_arrive_in_order_and_inline_only_with_one_thread_and_no_prefetch(threads, prefetch):
    readers = Readers()
    assert list(read_in_order(range(50), readers, reader_threads=threads, prefetch=prefetch)) == [
        i * 2 for i in range(50)
    ]
    assert readers.balanced()
    inline = readers.opened == [threading.current_thread().name]
    assert inline == (threads == 1 and prefetch == 0)


@pytest.mark.parametrize("threads,prefetch", WAYS)
def test_break_stops_the_threads_and_closes_every_reader(threads, prefetch):
    readers = Readers()
    for item in read_in_order(range(10_000), readers, reader_threads=threads, prefetch=prefetch):
        if item == 6:
            break
    gc.collect()
    assert readers.balanced() and readers.read < 10_000


def test_del_stops_the_threads():
    readers = Readers()
    iterator = read_in_order(range(10_000), readers, reader_threads=3, prefetch=2)
    next(iterator)
    del iterator
    assert readers.balanced()


@pytest.mark.parametrize("error", [ZeroDivisionError, KeyboardInterrupt])
def test_an_exception_in_the_consumer_stops_the_threads(error):
    readers = Readers()
    with pytest.raises(error):
        for item in read_in_order(range(10_000), readers, reader_threads=3, prefetch=2):
            if item == 4:
                raise error
    assert readers.balanced()


@pytest.mark.parametrize("threads,prefetch", WAYS)
def test_a_reader_error_reaches_the_consumer_after_the_items_before_it(threads, prefetch):
    readers = Readers(fail_at=4)
    got = []
    with pytest.raises(KeyError, match="page 4"):
        for item in read_in_order(range(50), readers, reader_threads=threads, prefetch=prefetch):
            got.append(item)  # noqa: PERF402 (the loop must stop at the error)
    assert got == [0, 2, 4, 6]
    assert readers.balanced()


def test_no_items_start_no_thread():
    readers = Readers()
    assert list(read_in_order([], readers, reader_threads=4, prefetch=2)) == []
    assert readers.opened == []


def test_memory_is_bounded_by_prefetch_plus_threads():
    lock = threading.Lock()
    live = {"now": 0, "max": 0}

    class Counting:
        def read(self, item):
            with lock:
                live["now"] += 1
                live["max"] = max(live["max"], live["now"])
            return item

        def close(self):
            pass

    for _ in read_in_order(range(200), Counting, reader_threads=3, prefetch=2):
        with lock:
            live["now"] -= 1  # the consumer is done with the previous page when it asks for the next
    assert live["max"] <= 3 + 2
