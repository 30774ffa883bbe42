"""The TensorFlow adapter: a TableLoader as a re-iterable ``tf.data.Dataset``.

The generator hands TensorFlow whole groups of batches (NOTE [ Only the last batch is partial ] in
reading/batching.py) and TensorFlow cuts them into batches in C++, so small batches cost no Python per
batch. The dataset has an explicit ``output_signature`` and, for static tables, a known
cardinality (Keras progress bars know the number of steps).

NOTE [ Epochs of a dataset ]
Every pass over the dataset calls the loader's generator once, and every call is the loader's next
epoch (its shuffle order is a function of ``(seed, epoch)``), except Keras 3's first-batch peek
under a ``tf.distribute`` strategy, which reads that epoch without beginning it (NOTE [ Keras
peeks ] in tf/keras_peek.py). ``model.fit(ds, epochs=N)`` makes exactly one pass per Keras epoch;
a pass made outside ``fit`` (``ds.take(1)``, ``ds.reduce``, a ``for`` loop over the dataset) uses
an epoch too. To pin the mapping, ``ds.dh_tf_loader`` is the loader: ``ds.dh_tf_loader.set_epoch(0)``
before ``fit`` restarts the count, and ``dh_tf.SyncEpochs(loader)`` sets it at each Keras epoch.
A dataset of a static table has the cardinality of one epoch. One built from a loader with a resume
point pending (``load_state_dict`` mid-epoch) is the rest of that epoch, once: its cardinality is
the batches left, and a second pass is refused (Keras 3 keeps the length of a first pass of unknown
length for every later epoch, so a longer second pass would be cut short without a word). Build
the later epochs' dataset after it, as ``dh_tf.ResumableTraining`` does.
"""

from __future__ import annotations

from typing import Any

from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import TableLoader
from dh_tf.tf.keras_peek import keras_is_peeking
from dh_tf.tf.specs import import_tensorflow, output_signature


def to_dataset(
    table: Any,
    features: ColumnSpec,
    label: ColumnSpec | None = None,
    *,
    input_context: Any = None,
    follow: bool = False,
    **options: Any,
) -> Any:
    """Streams a Deephaven table as a ``tf.data.Dataset`` of ``x``, ``(x, y)`` or ``(x, y, w)`` batches.

    Takes exactly the arguments of :class:`~dh_tf.reading.loader.TableLoader`, and validates them the same
    way, before any data moves. Each pass over the dataset is a new epoch of the loader (``model.fit(ds,
    epochs=N)`` works); a pass made outside ``fit`` (e.g. ``ds.take(1)``) uses up an epoch too, so
    the seeded shuffle order of later passes moves on by one (NOTE [ Epochs of a dataset ]). Errors
    found while reading (e.g. a null under ``nulls="error"``) surface from TensorFlow as
    ``InvalidArgumentError`` / ``UnknownError`` whose message contains the original one; iterate a
    ``TableLoader`` to get them with their own type.

    Args:
        input_context: a ``tf.distribute.InputContext`` (what ``strategy.distribute_datasets_from_function``
            passes): the dataset then reads shard ``input_pipeline_id`` of ``num_input_pipelines``
            (NOTE [ Shards ] in reading/plan.py) and ``batch_size`` is the *global* batch size, divided by
            ``num_replicas_in_sync`` per replica. Not together with ``num_shards``/``shard_index``.
        follow: True to follow a live (append-only or blink) table instead: an infinite dataset of
            the rows it adds, in arrival order (``dh_tf.follow_dataset``; ``options`` as
            :func:`dh_tf.follow`); use ``model.fit(ds, steps_per_epoch=N, epochs=M)``.
        options: as :class:`~dh_tf.reading.loader.TableLoader`.

    Example:
        >>> ds = to_dataset(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=256)
        >>> model.fit(ds, epochs=3, validation_data=to_dataset(t.where("Split = `test`"), ...))
        >>> strategy.distribute_datasets_from_function(
        ...     lambda ctx: to_dataset(t, ["A", "B"], "Label", batch_size=256, input_context=ctx))

    Raises:
        TypeError, ValueError: as :class:`~dh_tf.reading.loader.TableLoader`; ``input_context`` is not a
            ``tf.distribute.InputContext``, comes with ``num_shards``/``shard_index``, or the global
            batch size does not divide by the replicas.
        ImportError: TensorFlow is not installed.
    """
    if follow is not False:
        if follow is not True:
            raise ArgumentTypeError(f"to_dataset: follow must be True or False (got {follow!r} of type {type(follow).__name__})")
        if input_context is not None:
            raise ArgumentError("to_dataset: follow=True reads a live table in arrival order; it takes no input_context")
        from dh_tf.tf.follow_dataset import follow_dataset

        return follow_dataset(table, features, label, **options)
    if input_context is not None:
        options = _shard_options(input_context, options)
    return dataset_from_loader(TableLoader(table, features, label, **options))


def _shard_options(input_context: Any, options: dict[str, Any]) -> dict[str, Any]:
    tf = import_tensorflow()
    if not isinstance(input_context, tf.distribute.InputContext):
        raise ArgumentTypeError(
            f"to_dataset: input_context must be a tf.distribute.InputContext (got {input_context!r} of type "
            f"{type(input_context).__name__})"
        )
    clash = [name for name in ("num_shards", "shard_index") if name in options]
    if clash:
        raise ArgumentError(f"to_dataset: pass input_context or {' / '.join(clash)}, not both")
    global_batch = options.get("batch_size", 32)
    replicas = input_context.num_replicas_in_sync
    if isinstance(global_batch, int) and not isinstance(global_batch, bool) and global_batch % replicas:
        raise ArgumentError(
            f"to_dataset: batch_size (the global batch size) must divide by num_replicas_in_sync={replicas} "
            f"(got batch_size={global_batch})"
        )
    return {
        **options,
        "batch_size": input_context.get_per_replica_batch_size(global_batch) if isinstance(global_batch, int) else global_batch,
        "num_shards": input_context.num_input_pipelines,
        "shard_index": input_context.input_pipeline_id,
    }


def dataset_from_loader(loader: TableLoader) -> Any:
    """Wraps an existing loader as a ``tf.data.Dataset`` (see :func:`to_dataset`)."""
    tf = import_tensorflow()
    batch_size, drop_remainder = loader.batch_size, loader.drop_remainder

    def batches_of(element: Any) -> Any:
        # The group's whole batches are the rows of one reshaped view, handed out by
        # from_tensor_slices without a copy (a slice that starts aligned is shared: NOTE [ Aligned
        # page arrays ]); a last partial batch follows on its own. Not from_tensor_slices(group).batch():
        # every row would be an element (~10x slower, docs/design.md section 3). Not a map over a
        # range of slice starts either: one function call per batch (~12 us more per batch here,
        # docs/design.md section 8).
        rows = tf.shape(tf.nest.flatten(element)[0], out_type=tf.int64)[0]
        whole = rows // batch_size * batch_size
        batches = tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda t: tf.reshape(t[:whole], [-1, batch_size, *t.shape[1:]]), element)
        )
        if drop_remainder:
            return batches
        rest = tf.data.Dataset.from_tensors(tf.nest.map_structure(lambda t: t[whole:], element))
        return batches.concatenate(rest.take(tf.minimum(rows - whole, 1)))

    signature = output_signature(loader.layout, tf)

    resumed, passes = loader.resume_point, [0]

    def groups() -> Any:
        # NOTE [ Keras peeks ]: asked when the pass starts (the generator's first next(), on a tf.data thread)
        peek = keras_is_peeking(loader)
        if resumed is not None and not peek:
            passes[0] += 1
            if passes[0] > 1:  # NOTE [ Epochs of a dataset ]
                raise UsageError(
                    f"dataset_from_loader: this dataset was built while the loader's resume point {resumed} "
                    "(epoch, batches) was pending, so its one pass is the rest of that epoch; build the later "
                    "epochs' dataset after that pass (dh_tf.dataset_from_loader(loader) again), or train with "
                    "dh_tf.ResumableTraining"
                )
        yield from loader.iter_groups(peek=peek)

    dataset = tf.data.Dataset.from_generator(groups, output_signature=signature)
    dataset = dataset.flat_map(lambda *group: batches_of(group if len(group) > 1 else group[0]))
    if not loader.source.is_refreshing:
        rest = len(loader) - (0 if resumed is None else resumed[1])  # NOTE [ Epochs of a dataset ]
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(rest))
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    if loader.plan.num_shards > 1:
        # tf.distribute's AUTO policy falls back to DATA sharding for generator datasets: every worker
        # would read the whole table and drop the rest. dh_tf already shards in the plan.
        policy = tf.data.Options()
        policy.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(policy)
    dataset.dh_tf_loader = loader  # the loader behind the dataset: set_epoch, state_dict, close
    dataset.dh_tf_peek_keys = (loader,)
    return dataset


def loader_of(data: Any, where: str) -> TableLoader:
    """The loader behind ``data``: a :class:`TableLoader` itself, or a dataset made by :func:`to_dataset`.

    Raises:
        ArgumentTypeError: ``data`` is a dataset derived from a dh_tf dataset (by ``.map``, ``.batch``,
            ...: its epochs are the loader's, so pass the loader), or neither a loader nor a dh_tf dataset.
    """
    if isinstance(data, TableLoader):
        return data
    loader = getattr(data, "dh_tf_loader", None)
    if isinstance(loader, TableLoader):
        return loader
    if _derived_loader(data) is not None:
        raise ArgumentTypeError(
            f"{where}: this dataset was derived from a dh_tf dataset (by map, batch, ...), which drops what "
            "ties its passes to the loader's epochs; pass the TableLoader itself (the original dataset's "
            ".dh_tf_loader) and, to resume, how to build your dataset from it"
        )
    raise ArgumentTypeError(
        f"{where}: expected a dh_tf.TableLoader or a dataset from dh_tf.to_dataset (got {type(data).__name__})"
    )


def _derived_loader(dataset: Any) -> TableLoader | None:
    """The loader of a dh_tf dataset that ``dataset`` was built from by tf.data transformations, if any."""
    pending, seen = [dataset], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        loader = getattr(current, "dh_tf_loader", None)
        if isinstance(loader, TableLoader):
            return loader
        inputs = getattr(current, "_inputs", None)  # tf.data's own graph of datasets
        if callable(inputs):
            try:
                pending.extend(inputs())
            except NotImplementedError:  # a dataset type that does not list its inputs
                continue
    return None
