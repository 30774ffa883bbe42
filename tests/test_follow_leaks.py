"""Follow mode leaks nothing pass after pass: listeners, reader threads, engine readers, RSS, JVM heap.

Each pass is a short ``follow(..., max_rows=...)`` over a live table that keeps ticking (a
``time_table``, or a ``table_publisher`` blink table fed by a thread). After every pass the
follower's listener, reader thread and engine readers (fill contexts and chunks: a spy on dh_tf's
own ``EngineColumnReader``) must be gone; over the later passes RSS and the heap after a full GC
must not grow by more than generous bounds (NOTE [ Leak bounds ] in test_leaks.py for how such
bounds are chosen; here a leaked 64K-row page set per pass would add ~1.5 MiB a pass).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import test_follow as base
import test_follow_stop

from dh_tf.live.follow import follow

fast_update_graph = base.fast_update_graph
open_readers = test_follow_stop.open_readers
PASSES = 30
WARMUP_PASSES = 10
MAX_RSS_GROWTH_MIB = 30
MAX_HEAP_GROWTH_MIB = 16


def memory_mib() -> tuple[float, float]:
    """(process RSS, JVM heap used after a full GC), in MiB."""
    import jpy
    import psutil

    from dh_tf.diagnostics import memory_report

    gc.collect()
    jpy.get_type("java.lang.System").gc()
    return psutil.Process().memory_info().rss / 2**20, memory_report().heap_used_mib


@pytest.mark.parametrize("kind", ["append-only", "blink"])
def test_follow_passes_leak_no_listener_thread_reader_or_memory(fast_update_graph, open_readers, kind):
    from deephaven import time_table

    source = None
    if kind == "blink":
        source = base.Publisher(chunks=10**6, rows=20, interval_s=0.005, append_only=False).start()
        table = source.table
    else:
        table = time_table("PT0.001s").update_view(["X = (double)ii", "Id = ii"])
    samples = []
    try:
        for number in range(PASSES):
            follower = follow(table, "X", "Id", batch_size=16, max_rows=64, page_rows=16)
            assert follower.kind == kind
            ids = np.concatenate([y for _, y in base.collect(follower)])
            steps = np.diff(ids)  # a blink table drops what does not fit the queue: later rows, never earlier ones
            assert len(ids) == 64 and np.all(steps == 1 if kind == "append-only" else steps >= 1), f"pass {number}"
            base.assert_clean(table)
            base.wait_for(lambda: not open_readers, f"pass {number}: {len(open_readers)} engine readers left open")
            del follower
            if number >= WARMUP_PASSES - 1:
                samples.append(memory_mib())
    finally:
        if source is not None:
            source.stop()
    rss = [r for r, _ in samples]
    heap = [h for _, h in samples]
    report = f"passes {WARMUP_PASSES}-{PASSES}: rss {rss[0]:.1f} -> {rss[-1]:.1f} MiB, heap {heap[0]:.1f} -> {heap[-1]:.1f} MiB"
    print(report)
    assert rss[-1] - rss[0] < MAX_RSS_GROWTH_MIB, report
    assert heap[-1] - heap[0] < MAX_HEAP_GROWTH_MIB, report
