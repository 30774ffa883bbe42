"""Nothing leaks over 100 epochs: threads, process RSS and JVM heap (NOTE [ Prefetch thread lifecycle ])."""

from __future__ import annotations

import gc
import threading

import pytest

import dh_tf
from dh_tf.diagnostics import memory_report


def settled_memory():
    import jpy
    import psutil

    gc.collect()
    jpy.get_type("java.lang.System").gc()
    return psutil.Process().memory_info().rss / 2**20, memory_report().heap_used_mib


@pytest.mark.slow
def test_100_epochs_leak_no_threads_rss_or_heap(make_table):
    table = make_table(200_000, *[f"F{i} = (float)(i % 97) * {i}" for i in range(8)], "Y = (int)(i % 2)")
    loader = dh_tf.TableLoader(table, [f"F{i}" for i in range(8)], "Y", batch_size=1024, page_rows=65536,
                               shuffle=True, seed=1, prefetch=2)

    def epoch(number):
        for step, _ in enumerate(loader):
            if number % 2 and step == 100:  # every other epoch leaves mid-way
                break

    for number in range(30):  # the allocators' high-water mark settles in the first ~30 epochs
        epoch(number)
    threads_before = threading.active_count()
    rss_before, heap_before = settled_memory()
    for number in range(100):
        epoch(number)
    rss_after, heap_after = settled_memory()
    assert threading.active_count() == threads_before
    assert rss_after - rss_before < 64, (rss_before, rss_after)
    assert heap_after - heap_before < 64, (heap_before, heap_after)
