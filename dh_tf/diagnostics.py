"""Memory figures for reports and benchmarks: process RSS and JVM heap (current and peak)."""

from __future__ import annotations

import resource
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryReport:
    """Peak process RSS (Python + embedded JVM) and JVM heap figures, in MiB."""

    peak_rss_mib: float
    heap_used_mib: float
    heap_peak_mib: float
    heap_max_mib: float


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_heap_peak() -> None:
    """Resets the JVM heap pools' peak usage, to measure the peak of what follows."""
    for pool in _heap_pools():
        pool.resetPeakUsage()


def memory_report() -> MemoryReport:
    """Peak RSS, and the JVM heap used now, its peak (sum of pool peaks, an upper bound) and max."""
    import jpy

    runtime = jpy.get_type("java.lang.Runtime").getRuntime()
    pools = _heap_pools()
    return MemoryReport(
        peak_rss_mib=peak_rss_mib(),
        heap_used_mib=(runtime.totalMemory() - runtime.freeMemory()) / 2**20,
        heap_peak_mib=sum(pool.getPeakUsage().getUsed() for pool in pools) / 2**20,
        heap_max_mib=runtime.maxMemory() / 2**20,
    )


def _heap_pools() -> list:
    import jpy

    factory = jpy.get_type("java.lang.management.ManagementFactory")
    heap = jpy.get_type("java.lang.management.MemoryType").HEAP
    return [pool for pool in factory.getMemoryPoolMXBeans().toArray() if pool.getType() == heap]
