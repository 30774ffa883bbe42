"""Keras ``model.fit`` on several tf.distribute workers: the distributed dataset and its steps per epoch.

NOTE [ Keras fit on many workers ]
Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (docs/design.md section 5); the
legacy Keras, ``tf_keras`` (``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported), trains there,
with two conditions its users must know: it refuses a distributed dataset without
``steps_per_epoch``, and with steps given it keeps ONE iterator for all epochs, so a dataset that
ends after one epoch leaves epoch 2 without data (loss 0.0, no error). :func:`distributed_fit_dataset`
meets both:

- each worker's dataset is its own shard (``to_dataset`` with the strategy's ``InputContext``:
  disjoint, equal-sized, NOTE [ Shards ] in reading/plan.py), repeated: every repetition is a new pass
  of the worker's loader, that is its next epoch (NOTE [ Epochs of a dataset ]), begun when the
  previous pass ended; the first is ``initial_epoch``;
- ``steps_per_epoch`` is the batches of one epoch of a shard, counted by dh_tf's plan, and checked
  equal on every worker (one all-gather) before ``fit``: a worker with more steps would wait for ever
  in a collective op. With several replicas per worker, each step takes one batch per replica
  (tf.distribute hands a worker's batches to its replicas in turn), so the steps are the shard's
  batches divided by the worker's replicas and each epoch is cut to that many batches per replica
  (up to ``replicas - 1`` batches per epoch left out), so no step mixes two epochs.

So Keras epoch ``e`` (``fit(..., initial_epoch=initial_epoch)``) trains on exactly loader epoch ``e``
of every shard, with no callback (``SyncEpochs`` would undo the read-ahead: it refuses this dataset),
also with Keras 3, whose first-batch peek reads without beginning an epoch (NOTE [ Keras peeks ] in
keras/keras_peek.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from dh_tf.checks import checked_keywords, int_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import SHUFFLE_BLOCK_ROWS
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.options import LOADER_OPTIONS, pick
from dh_tf.reading.padding import PadTo
from dh_tf.tf.dataset import to_dataset
from dh_tf.tf.specs import import_tensorflow

WHERE = "distributed_fit_dataset"
_DECIDED = "the strategy decides each worker's shard (use dh_tf.to_dataset for your own sharding)"
STRATEGY_OPTIONS = {
    "input_context": _DECIDED,
    "num_shards": _DECIDED,
    "shard_index": _DECIDED,
    "follow": "a live table has no steps per epoch to agree on",
}
"""``to_dataset`` options that the strategy decides (-> why), refused here; the other TableLoader options are
keyword parameters."""


class FitDataset(NamedTuple):
    """What ``model.fit`` needs on every worker: ``model.fit(dataset, steps_per_epoch=steps_per_epoch, ...)``."""

    dataset: Any
    """A ``tf.distribute`` distributed dataset of this worker's shard, one loader epoch per Keras epoch, endless."""
    steps_per_epoch: int
    """Steps of one epoch, the same on every worker."""


@checked_keywords(WHERE, refused=STRATEGY_OPTIONS)
def distributed_fit_dataset(
    strategy: Any,
    table: Any,
    features: ColumnSpec,
    label: ColumnSpec | None = None,
    *,
    batch_size: int = 32,
    initial_epoch: int = 0,
    page_rows: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    sample_weight: str | None = None,
    dtype: Any = "float32",
    label_dtype: Any = None,
    prefetch: int = 2,
    reader_threads: int | None = None,
    cache: bool | str | os.PathLike = False,
    shuffle_block_rows: int = SHUFFLE_BLOCK_ROWS,
    read_path: str = "auto",
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
) -> FitDataset:
    """A distributed dataset of ``table`` for ``strategy`` and its ``steps_per_epoch``, for ``model.fit``.

    Call it on every worker, after creating the strategy, with the same arguments (the same table and
    ``seed``). Each worker reads only its own shard; Keras epoch ``e`` reads loader epoch ``e`` of
    every shard (NOTE [ Keras fit on many workers ]). Train with ``tf_keras``: set
    ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported and build the model with ``tf.keras``
    (Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``, an upstream bug). Works with any
    strategy (``MirroredStrategy``, the default one) and Keras 3 where its ``fit`` works.

    Args:
        strategy: a ``tf.distribute.Strategy``.
        table, features, label: as :func:`dh_tf.to_dataset`; the table must be static (a
            refreshing one can change its steps between epochs: pass ``table.snapshot()``).
        batch_size: the *global* batch size, divided by ``strategy.num_replicas_in_sync`` per replica.
        initial_epoch: the loader epoch of Keras's first epoch: pass the same ``initial_epoch`` to ``fit``.
        page_rows, shuffle, seed, drop_remainder, nulls, sample_weight, dtype, label_dtype, prefetch: as
            :class:`~dh_tf.reading.loader.TableLoader`, with its defaults.
        reader_threads, cache, shuffle_block_rows, read_path, pad_to, padding, truncating, pad_value:
            as :class:`~dh_tf.reading.loader.TableLoader`, with its defaults; not the ones the strategy
            decides (:data:`STRATEGY_OPTIONS`: ``input_context``, ``num_shards``, ``shard_index``,
            ``follow``). Pass ``seed`` with ``shuffle=True``: every worker needs the same.

    Returns:
        ``FitDataset(dataset, steps_per_epoch)``, a named tuple.

    Raises:
        ArgumentTypeError: ``strategy`` is not a ``tf.distribute.Strategy``; an argument of
            ``to_dataset`` has the wrong type; an unknown keyword (naming the closest ones).
        ArgumentError: an option the strategy decides was passed; ``batch_size`` does not divide by
            the replicas; the table is refreshing; a shard has fewer batches than its worker has
            replicas (nothing to train); ``to_dataset``'s checks.
        UsageError: the workers count different steps per epoch (they read different tables).

    Example:
        >>> # TF_USE_LEGACY_KERAS=1 in the environment; TF_CONFIG names the workers
        >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()
        >>> data = dh_tf.distributed_fit_dataset(strategy, table, ["A", "B"], "Label",
        ...                                      batch_size=256, shuffle=True, seed=7)
        >>> with strategy.scope():
        ...     model = build_model()          # tf.keras, i.e. tf_keras
        >>> model.fit(data.dataset, steps_per_epoch=data.steps_per_epoch, epochs=3)
    """
    tf = import_tensorflow()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ArgumentTypeError(
            f"{WHERE}: strategy must be a tf.distribute.Strategy (got {strategy!r} of type {type(strategy).__name__})"
        )
    options = pick(locals(), [name for name in LOADER_OPTIONS if name not in STRATEGY_OPTIONS and name != "batch_size"])
    batch_size = int_arg(batch_size, "batch_size", WHERE, minimum=1)
    initial_epoch = int_arg(initial_epoch, "initial_epoch", WHERE, minimum=0)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ArgumentError(
            f"{WHERE}: batch_size (the global batch size) must divide by num_replicas_in_sync={replicas} "
            f"(got batch_size={batch_size})"
        )

    shards: list[tuple[Any, int]] = []  # (loader, steps) of each input pipeline on this worker

    def dataset_fn(context: Any) -> Any:
        dataset = to_dataset(table, features, label, batch_size=batch_size, input_context=context, **options)
        loader = dataset.dh_tf_loader
        if loader.source.is_refreshing:
            raise ArgumentError(
                f"{WHERE}: the table is refreshing, so its steps per epoch can change between epochs and "
                "the workers would disagree; pass a static snapshot (table.snapshot())"
            )
        per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        steps = len(loader) // per_pipeline
        if steps == 0:
            raise ArgumentError(
                f"{WHERE}: each worker's shard of {loader.plan.shard_rows(loader.num_rows)} rows gives "
                f"{len(loader)} batches of {loader.batch_size} rows per replica, fewer than its "
                f"{per_pipeline} replicas: nothing to train; use a smaller batch_size or a bigger table"
            )
        loader.set_epoch(initial_epoch)
        shards.append((loader, steps))
        if steps * per_pipeline < len(loader):  # whole steps only: no step mixes two epochs
            dataset = dataset.take(steps * per_pipeline)
        return dataset.repeat()

    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    steps = shards[0][1]
    if any(s != steps for _, s in shards):
        raise UsageError(f"{WHERE}: this worker's input pipelines count different steps per epoch: {[s for _, s in shards]}")
    if replicas > 1:
        _check_equal_steps(strategy, steps, tf)
    distributed.dh_tf_pinned_epochs = True  # SyncEpochs refuses it: NOTE [ Keras fit on many workers ]
    distributed.dh_tf_peek_keys = tuple(loader for loader, _ in shards)  # NOTE [ Keras peeks ]
    return FitDataset(distributed, steps)


def _check_equal_steps(strategy: Any, steps: int, tf: Any) -> None:
    """Raises UsageError on every worker unless all count ``steps`` (one all-gather, a collective op)."""
    def local_steps() -> Any:
        return tf.constant([steps], tf.int64)

    @tf.function(autograph=False)
    def every_replicas_steps() -> Any:
        return strategy.gather(strategy.run(local_steps), axis=0)

    every = [int(s) for s in every_replicas_steps().numpy()]
    if len(set(every)) > 1:
        raise UsageError(
            f"{WHERE}: the workers' shards give different steps per epoch (per replica: {every}), so fit would "
            "wait for ever in a collective op; every worker must pass the same table and batch_size"
        )
