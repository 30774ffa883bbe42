"""Refreshing tables: each epoch reads one consistent snapshot, so no row mixes two update cycles."""

from __future__ import annotations

import time

import numpy as np
import pytest

import dh_tf


@pytest.fixture(scope="module")
def fast_update_graph(server):
    """Cycles every 5 ms instead of 1 s, so that updates land in the middle of an epoch."""
    import jpy
    from deephaven.execution_context import get_exec_ctx

    graph = jpy.cast(get_exec_ctx().update_graph.j_update_graph, jpy.get_type("io.deephaven.engine.updategraph.impl.PeriodicUpdateGraph"))
    before = graph.getTargetCycleDurationMillis()
    graph.setTargetCycleDurationMillis(5)
    yield
    graph.setTargetCycleDurationMillis(before)


@pytest.fixture(scope="module")
def ticking(fast_update_graph):
    from deephaven import empty_table, time_table

    # One row whose V changes every cycle, cross-joined onto 300k rows: every cycle modifies every row.
    ticker = time_table("PT0.005s").view("V = ii").last_by()
    table = empty_table(300_000).update("Id = (long)i").join(ticker).update_view(["A = V + Id", "B = 2 * (V + Id)"])
    deadline = time.time() + 10
    while table.size == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert table.is_refreshing and table.size == 300_000
    return table


def test_every_epoch_is_one_consistent_snapshot(ticking):
    loader = dh_tf.TableLoader(ticking, ["Id", "A"], "B", batch_size=4096, page_rows=65536, dtype="float64",
                               label_dtype="float64", prefetch=1)
    cycles = set()
    deadline = time.time() + 4
    while time.time() < deadline:
        batches = list(loader)
        ids = np.concatenate([x[:, 0] for x, _ in batches])
        a = np.concatenate([x[:, 1] for x, _ in batches])
        b = np.concatenate([y for _, y in batches])
        assert np.array_equal(ids, np.arange(300_000))
        v = a - ids
        assert np.all(v == v[0]), "rows of one epoch come from different update cycles"
        assert np.array_equal(b, 2 * a), "a row mixes values from two update cycles"
        cycles.add(v[0])
        time.sleep(0.3)
    assert len(cycles) >= 2, "the table did not tick during the test"


def test_refreshing_dataset_has_unknown_cardinality_and_reads(ticking):
    import tensorflow as tf

    ds = dh_tf.to_dataset(ticking, ["A"], "B", batch_size=50_000, dtype="float64", label_dtype="float64")
    assert ds.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    rows = sum(int(tf.shape(y)[0]) for _, y in ds)
    assert rows == 300_000
