"""Nothing leaks over 100 epochs: threads, process RSS and JVM heap (NOTE [ Reader threads ] in prefetch.py).

Runs in a subprocess with its own JVM: inside the full suite the process already carries TensorFlow and
every earlier test's tables, and their allocators moved RSS by ~100 MiB between two points 100 epochs
apart, with no leak in dh_tf. A fresh process measures only the loader.
"""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import free_port, run_python

WARMUP_EPOCHS = 30  # the allocators' high-water mark settles in the first ~30 epochs (measured over 300)
MEASURED_EPOCHS = 100
SAMPLE_EVERY = 10  # from the first epochs on, so the warm-up sees the same full GCs as the measured epochs
PAGE_ROWS = 65536
# NOTE [ Leak bounds ]: a page is PAGE_ROWS rows of 8 float32 features and an int32 label, 65536 * 9 * 4 B =
# 2.25 MiB. A loader that keeps one page per epoch alive grows RSS by 2.25 MiB/epoch, 225 MiB over the
# measured epochs (leaking a 2.25 MiB numpy array or Java float[] each epoch measured +2.2 to +2.8 MiB/epoch
# of RSS; the Java one +3.0 MiB/epoch of heap, G1 rounding it up to whole regions). Without a leak, the RSS
# slope over epochs 30-130 of a fresh process stayed within +-0.15 MiB/epoch (6 runs), and later 100-epoch
# windows (up to epoch 330) reached +0.25 as glibc and the JVM step their footprint by 10-20 MiB: so
# 0.5 MiB/epoch, 4.5x below a page an epoch and 2x above the noise. The heap after a full GC is exact to
# ~0.1 MiB (slopes within +-0.005 MiB/epoch), so its bound is 10x tighter: a Java leak of 1/20 page
# (115 KiB) an epoch measured +0.11 MiB/epoch.
MAX_RSS_MIB_PER_EPOCH = 0.5
MAX_HEAP_MIB_PER_EPOCH = 0.05

CHILD = """
import gc, json, sys, threading
import psutil
from dh_tf.server import start_server
start_server(heap="1g", port=int(sys.argv[1]))
import jpy  # needs the JVM started
from deephaven import empty_table
import dh_tf
from dh_tf.diagnostics import memory_report

loader_options = json.loads(sys.argv[2])
num_epochs, every, page_rows = (int(a) for a in sys.argv[3:6])
table = empty_table(200_000).update(["Id = (long)i", *[f"F{i} = (float)(i % 97) * {i}" for i in range(8)],
                                     "Y = (int)(i % 2)"])
loader = dh_tf.TableLoader(table, [f"F{i}" for i in range(8)], "Y", batch_size=1024, page_rows=page_rows,
                           shuffle=True, seed=1, prefetch=2, **loader_options)
process = psutil.Process()
java_system = jpy.get_type("java.lang.System")

def epoch(number):
    for step, _ in enumerate(loader):
        if number % 2 and step == 100:  # every other epoch leaves mid-way
            break

def sample(number):
    gc.collect()
    java_system.gc()
    return dict(epoch=number, rss_mib=process.memory_info().rss / 2**20, heap_mib=memory_report().heap_used_mib,
                threads=threading.active_count(),
                dh_tf_threads=[t.name for t in threading.enumerate() if t.name.startswith("dh_tf-")])

samples = []
for number in range(num_epochs):
    epoch(number)
    if (number + 1) % every == 0:
        samples.append(sample(number + 1))
print(json.dumps(samples))
"""


def slope(samples: list[dict], key: str) -> float:
    """The least-squares slope of ``key`` over the samples' epochs, in MiB per epoch."""
    return statistics.linear_regression([s["epoch"] for s in samples], [s[key] for s in samples]).slope


@pytest.mark.slow
@pytest.mark.parametrize("loader_options", [{"reader_threads": 1}, {"reader_threads": 4, "cache": True}],
                         ids=json.dumps)
def test_100_epochs_leak_no_threads_rss_or_heap(loader_options):
    proc = run_python(CHILD, str(free_port()), json.dumps(loader_options), str(WARMUP_EPOCHS + MEASURED_EPOCHS),
                      str(SAMPLE_EVERY), str(PAGE_ROWS), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = [s for s in samples if s["epoch"] >= WARMUP_EPOCHS]
    assert len(measured) == MEASURED_EPOCHS // SAMPLE_EVERY + 1
    rss_slope, heap_slope = slope(measured, "rss_mib"), slope(measured, "heap_mib")
    table = "\n".join(f"epoch {s['epoch']:3}: rss {s['rss_mib']:7.1f} MiB, heap {s['heap_mib']:6.1f} MiB, "
                      f"{s['threads']} threads, dh_tf threads {s['dh_tf_threads']}" for s in samples)
    report = (f"epochs {WARMUP_EPOCHS}-{WARMUP_EPOCHS + MEASURED_EPOCHS}: rss slope {rss_slope:+.3f} MiB/epoch "
              f"(bound {MAX_RSS_MIB_PER_EPOCH}), heap slope {heap_slope:+.4f} MiB/epoch (bound {MAX_HEAP_MIB_PER_EPOCH})"
              f"\n{table}")
    print(report)  # shown with -rP: how close a passing run sits to the bounds
    assert measured[-1]["threads"] == measured[0]["threads"], report
    assert not any(s["dh_tf_threads"] for s in samples), report
    assert rss_slope < MAX_RSS_MIB_PER_EPOCH, report
    assert heap_slope < MAX_HEAP_MIB_PER_EPOCH, report
