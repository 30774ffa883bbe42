"""The TensorFlow adapter: a TableLoader as a re-iterable ``tf.data.Dataset``.

The generator hands TensorFlow whole groups of batches (NOTE [ Only the last batch is partial ] in
reading/batching.py) and TensorFlow cuts them into batches in C++, so small batches cost no Python per
batch. The dataset has an explicit ``output_signature`` and, for static tables, a known
cardinality (Keras progress bars know the number of steps).

NOTE [ Epochs of a dataset ]
Every pass over the dataset calls the loader's generator once, and every call is the loader's next
epoch (its shuffle order is a function of ``(seed, epoch)``), except Keras 3's first-batch peek
under a ``tf.distribute`` strategy, which reads that epoch without beginning it (NOTE [ Keras
peeks ] in keras/keras_peek.py). ``model.fit(ds, epochs=N)`` makes exactly one pass per Keras epoch;
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

import os
from collections.abc import Mapping
from typing import Any

from dh_tf.checks import checked_keywords
from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError
from dh_tf.keras.keras_peek import keras_is_peeking
from dh_tf.live.follow import Follower
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import SHUFFLE_BLOCK_ROWS, TableLoader
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.options import LOADER_OPTIONS, changed, keyword_defaults, pick
from dh_tf.reading.padding import PadTo
from dh_tf.tf.follow_dataset import live_dataset
from dh_tf.tf.specs import import_tensorflow, output_signature

_WHERE = "to_dataset"
STATIC_ONLY = ("shuffle", "seed", "drop_remainder", "reader_threads", "cache", "shuffle_block_rows", "read_path",
               "num_shards", "shard_index", "input_context")
"""``to_dataset`` options that apply to static tables (read in epochs) only, refused with ``follow=True``."""
FOLLOW_ONLY = ("start", "max_wait", "max_rows", "max_batches", "on_overflow", "interval_s")
"""``to_dataset`` options that apply with ``follow=True`` only (the options of ``dh_tf.follow`` alone)."""
FOLLOW_DEFAULTS = keyword_defaults(Follower.__init__)


@checked_keywords(_WHERE, renamed={"queue_pages": "prefetch"})
def to_dataset(
    table: Any,
    features: ColumnSpec,
    label: ColumnSpec | None = None,
    *,
    batch_size: int = 32,
    page_rows: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    sample_weight: str | None = None,
    dtype: Any = "float32",
    label_dtype: Any = None,
    prefetch: int | None = None,
    reader_threads: int | None = None,
    cache: bool | str | os.PathLike = False,
    shuffle_block_rows: int = SHUFFLE_BLOCK_ROWS,
    read_path: str = "auto",
    num_shards: int = 1,
    shard_index: int = 0,
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
    input_context: Any = None,
    follow: bool = False,
    start: str = "now",
    max_wait: float | None = None,
    max_rows: int | None = None,
    max_batches: int | None = None,
    on_overflow: str = "drop",
    interval_s: float | None = None,
) -> Any:
    """Streams a Deephaven table as a ``tf.data.Dataset`` of ``x``, ``(x, y)`` or ``(x, y, w)`` batches.

    A static (or refreshing, one snapshot per epoch) table is read by a
    :class:`~dh_tf.reading.loader.TableLoader` of the options ``batch_size`` to ``pad_value``, which
    are TableLoader's, with its defaults, and checked the same way, before any data moves. Each pass
    over the dataset is a new epoch of the loader (``model.fit(ds, epochs=N)`` works); a pass made
    outside ``fit`` (e.g. ``ds.take(1)``) uses up an epoch too, so the seeded shuffle order of later
    passes moves on by one (NOTE [ Epochs of a dataset ]). Errors found while reading (e.g. a null
    under ``nulls="error"``) surface from TensorFlow as ``InvalidArgumentError`` / ``UnknownError``
    whose message contains the original one; iterate a ``TableLoader`` to get them with their own type.

    With ``follow=True`` it follows a live table instead (the one way into a live dataset): an
    infinite dataset of the rows the table adds, in arrival order, built by :func:`dh_tf.follow` of
    the options it takes (``batch_size``, ``page_rows``, ``nulls``, ``sample_weight``, ``dtype``,
    ``label_dtype``, ``prefetch``, the padding options, and ``start`` to ``interval_s``); train with
    ``model.fit(ds, steps_per_epoch=N, epochs=M)``. Each pass is a new follower (NOTE [ Follow mode ]
    in live/follow.py; a Keras peek is no pass: NOTE [ Keras peeks ] in keras/keras_peek.py).

    Args:
        table: a ``deephaven.table.Table`` (typically filtered with DQL) or a ``pydeephaven`` table; with
            ``follow=True`` a live append-only, add-only or blink one.
        features, label: as :class:`~dh_tf.reading.loader.TableLoader`.
        batch_size, page_rows, shuffle, seed, drop_remainder, nulls, sample_weight, dtype, label_dtype: as
            :class:`~dh_tf.reading.loader.TableLoader`. Shuffling is off unless ``shuffle=True``, as in
            ``tf.data`` and torch's ``DataLoader``.
        reader_threads, cache, shuffle_block_rows, read_path, num_shards, shard_index, pad_to, padding: as
            :class:`~dh_tf.reading.loader.TableLoader`.
        truncating, pad_value: as :class:`~dh_tf.reading.loader.TableLoader`.
        prefetch: pages read ahead; None: TableLoader's default, 2, or with ``follow=True``
            :func:`dh_tf.follow`'s, 4 (its docstring says why they differ).
        input_context: a ``tf.distribute.InputContext`` (what ``strategy.distribute_datasets_from_function``
            passes): the dataset then reads shard ``input_pipeline_id`` of ``num_input_pipelines``
            (NOTE [ Shards ] in reading/plan.py) and ``batch_size`` is the *global* batch size, divided by
            ``num_replicas_in_sync`` per replica. Not together with ``num_shards``/``shard_index``.
        follow: True to follow a live table (above).
        start, max_wait, max_rows, max_batches, on_overflow, interval_s: with ``follow=True`` only, as
            :func:`dh_tf.follow` (``max_wait`` None: only full batches are sent).

    Example:
        >>> ds = to_dataset(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=256, shuffle=True)
        >>> model.fit(ds, epochs=3, validation_data=to_dataset(t.where("Split = `test`"), ["A", "B"], "Label"))
        >>> live = to_dataset(ticks, ["Price", "Size"], "Up", follow=True, batch_size=256, max_wait=1.0)
        >>> model.fit(live, steps_per_epoch=100, epochs=5)

    Raises:
        TypeError (ArgumentTypeError): as :class:`~dh_tf.reading.loader.TableLoader` (or :func:`dh_tf.follow`);
            an unknown keyword (the message names the closest ones); ``follow`` is not a bool;
            ``input_context`` is not a ``tf.distribute.InputContext``.
        ValueError (ArgumentError): as :class:`~dh_tf.reading.loader.TableLoader` (or :func:`dh_tf.follow`);
            ``input_context`` comes with ``num_shards``/``shard_index``, or the global batch size does not
            divide by the replicas; ``follow=True`` with a static table or with an option of static
            tables (``shuffle``, ``cache``, ...), or an option of ``follow=True`` (``max_wait``, ...) without it.
        ImportError: TensorFlow is not installed.
    """
    given = changed(locals(), {**LOADER_OPTIONS, **FOLLOW_DEFAULTS, "input_context": None, "prefetch": None})
    if follow is not False and follow is not True:
        raise ArgumentTypeError(f"{_WHERE}: follow must be True or False (got {follow!r} of type {type(follow).__name__})")
    if follow:
        _refuse(locals(), given, STATIC_ONLY, "does not apply with follow=True, which reads each new row of a live "
                "table once, in arrival order")
        if getattr(table, "is_refreshing", True) is False:
            raise ArgumentError(
                f"{_WHERE}: follow=True needs a live (refreshing) table, but this table is static; leave out "
                "follow=True to read it in epochs"
            )
        options = pick(locals(), FOLLOW_DEFAULTS)
        options.update(prefetch=FOLLOW_DEFAULTS["prefetch"] if prefetch is None else prefetch)
        return live_dataset(table, features, label, options, where=_WHERE)
    _refuse(locals(), given, FOLLOW_ONLY, "applies with follow=True only (following a live table)")
    options = pick(locals(), LOADER_OPTIONS)
    options.update(prefetch=LOADER_OPTIONS["prefetch"] if prefetch is None else prefetch)
    if input_context is not None:
        options = _shard_options(input_context, options, given)
    return dataset_from_loader(TableLoader(table, features, label, **options))


def _refuse(values: Mapping[str, Any], given: list[str], names: tuple[str, ...], why: str) -> None:
    """Raises ArgumentError for the first option in ``given`` that is one of ``names``, saying ``why``."""
    bad = [name for name in given if name in names]
    if bad:
        raise ArgumentError(f"{_WHERE}: {bad[0]} {why} (got {bad[0]}={values[bad[0]]!r}); leave it out")


def _shard_options(input_context: Any, options: dict[str, Any], given: list[str]) -> dict[str, Any]:
    tf = import_tensorflow()
    if not isinstance(input_context, tf.distribute.InputContext):
        raise ArgumentTypeError(
            f"{_WHERE}: input_context must be a tf.distribute.InputContext (got {input_context!r} of type "
            f"{type(input_context).__name__})"
        )
    clash = [name for name in ("num_shards", "shard_index") if name in given]
    if clash:
        raise ArgumentError(f"{_WHERE}: pass input_context or {' / '.join(clash)}, not both")
    global_batch = options["batch_size"]
    replicas = input_context.num_replicas_in_sync
    if isinstance(global_batch, int) and not isinstance(global_batch, bool) and global_batch % replicas:
        raise ArgumentError(
            f"{_WHERE}: batch_size (the global batch size) must divide by num_replicas_in_sync={replicas} "
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
