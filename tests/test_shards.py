"""Sharding for multi-worker training (NOTE [ Shards ] in reading/plan.py) on a real table, and its bad input."""

from __future__ import annotations

import numpy as np
import pytest

import dh_tf


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(10_003, "X = (double)Id")


def shard_ids(table, num_shards, **kw):
    loaders = [dh_tf.TableLoader(table, "Id", batch_size=100, page_rows=1000, num_shards=num_shards, shard_index=k,
                                 **kw) for k in range(num_shards)]
    return loaders, [list(loader) for loader in loaders]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("num_shards", [2, 3, 4])
def test_shards_are_disjoint_cover_all_but_the_leftover_and_have_equal_batches(table, num_shards, shuffle):
    loaders, batches = shard_ids(table, num_shards, shuffle=shuffle, seed=5)
    counts = {len(b) for b in batches}
    assert counts == {len(loaders[0])} == {-(-(10_003 // num_shards) // 100)}
    ids = np.concatenate([np.concatenate(b) for b in batches])
    assert len(np.unique(ids)) == len(ids) == 10_003 - 10_003 % num_shards
    if not shuffle:  # table order: shard k holds the k-th contiguous part
        rows = 10_003 // num_shards
        for k, b in enumerate(batches):
            assert np.array_equal(np.concatenate(b), np.arange(k * rows, (k + 1) * rows))


def test_to_dataset_with_an_input_context_reads_its_shard_with_the_per_replica_batch(table):
    import tensorflow as tf

    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    ds = dh_tf.to_dataset(table, "Id", batch_size=400, input_context=context)
    loader = ds.dh_tf_loader
    assert (loader.batch_size, loader.plan.num_shards, loader.plan.shard_index) == (100, 2, 1)
    assert ds.cardinality().numpy() == len(loader) == 51
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
    ids = np.concatenate([x.numpy() for x in ds])
    assert np.array_equal(ids, np.arange(5001, 10_002))
    unsharded = dh_tf.to_dataset(table, "Id", batch_size=400)
    assert unsharded.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.AUTO


def test_distribute_datasets_from_function_on_one_machine(table):
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()  # the default strategy: one pipeline, one replica
    ds = strategy.distribute_datasets_from_function(
        lambda ctx: dh_tf.to_dataset(table, "Id", batch_size=1000, shuffle=True, seed=2, input_context=ctx))
    ids = np.concatenate([x.numpy() for x in ds])
    assert np.array_equal(np.sort(ids), np.arange(10_003))


@pytest.mark.parametrize("options,error,message", [
    ({"num_shards": 0}, ValueError, r"num_shards must be an int >= 1 \(got 0\)"),
    ({"num_shards": True}, TypeError, r"num_shards must be an int >= 1 \(got True of type bool\)"),
    ({"num_shards": 2, "shard_index": 2}, ValueError, r"shard_index must be in \[0, num_shards\) \(got shard_index=2, num_shards=2\)"),
    ({"num_shards": 2, "shard_index": -1}, ValueError, r"shard_index must be an int >= 0 \(got -1\)"),
    ({"shard_index": False}, TypeError, r"shard_index must be an int >= 0 \(got False of type bool\)"),
])
def test_bad_shard_options(table, options, error, message):
    with pytest.raises(error, match=message):
        dh_tf.TableLoader(table, "Id", **options)


def test_bad_input_context(table):
    import tensorflow as tf

    with pytest.raises(TypeError, match=r"input_context must be a tf.distribute.InputContext \(got 3 of type int\)"):
        dh_tf.to_dataset(table, "Id", input_context=3)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=2)
    with pytest.raises(ValueError, match="pass input_context or num_shards / shard_index, not both"):
        dh_tf.to_dataset(table, "Id", input_context=context, num_shards=2, shard_index=1)
    with pytest.raises(ValueError, match=r"batch_size \(the global batch size\) must divide by "
                                         r"num_replicas_in_sync=2 \(got batch_size=101\)"):
        dh_tf.to_dataset(table, "Id", batch_size=101, input_context=context)
