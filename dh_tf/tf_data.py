"""The TensorFlow adapter: a TableLoader as a re-iterable ``tf.data.Dataset``.

The generator hands TensorFlow whole groups of batches (NOTE [ Only the last batch is partial ] in
batching.py) and TensorFlow cuts them into batches in C++, so small batches cost no Python per
batch. The dataset has an explicit ``output_signature`` and, for static tables, a known
cardinality (Keras progress bars know the number of steps).
"""

from __future__ import annotations

from typing import Any

from dh_tf import batching
from dh_tf.columns import ColumnSpec, Layout
from dh_tf.loader import TableLoader


def import_tensorflow() -> Any:
    """Imports TensorFlow, or raises ImportError with an install hint."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "dh_tf.to_dataset needs TensorFlow: pip install tensorflow (or tensorflow-cpu)"
        ) from e
    return tf


def to_dataset(table: Any, features: ColumnSpec, label: ColumnSpec | None = None, **options: Any) -> Any:
    """Streams a Deephaven table as a ``tf.data.Dataset`` of ``x``, ``(x, y)`` or ``(x, y, w)`` batches.

    Takes exactly the arguments of :class:`~dh_tf.loader.TableLoader`, and validates them the same
    way, before any data moves. Each pass over the dataset is a new epoch (``model.fit(ds,
    epochs=N)`` works). Errors found while reading (e.g. a null under ``nulls="error"``) surface
    from TensorFlow as ``InvalidArgumentError`` / ``UnknownError`` whose message contains the
    original one; iterate a ``TableLoader`` to get them with their own type.

    Example:
        >>> ds = to_dataset(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=256)
        >>> model.fit(ds, epochs=3, validation_data=to_dataset(t.where("Split = `test`"), ...))

    Raises:
        TypeError, ValueError: as :class:`~dh_tf.loader.TableLoader`.
        ImportError: TensorFlow is not installed.
    """
    return dataset_from_loader(TableLoader(table, features, label, **options))


def output_signature(layout: Layout, tf: Any) -> Any:
    """The ``tf.TensorSpec`` structure of one group, rows dimension unknown."""
    specs = [tf.TensorSpec(shape=(None, *field.shape), dtype=tf.as_dtype(field.dtype)) for field in layout.fields]
    return layout.assemble(specs)


def dataset_from_loader(loader: TableLoader) -> Any:
    """Wraps an existing loader as a ``tf.data.Dataset`` (see :func:`to_dataset`)."""
    tf = import_tensorflow()
    batch_size, drop_remainder = loader.batch_size, loader.drop_remainder

    def batches_of(*group: Any) -> Any:
        # Slices over a range, not from_tensor_slices(...).batch(): that one makes every row a
        # dataset element (~10x slower, DESIGN.md section 3).
        element = group if len(group) > 1 else group[0]
        rows = tf.shape(tf.nest.flatten(element)[0], out_type=tf.int64)[0]
        count = batching.num_batches(rows, batch_size, drop_remainder)  # works on tensors too

        def take(index: Any) -> Any:
            start = index * batch_size
            batch = tf.nest.map_structure(lambda t: t[start : start + batch_size], element)
            if drop_remainder:  # static batch dimension, as Dataset.batch(drop_remainder=True) gives
                batch = tf.nest.map_structure(lambda t: tf.ensure_shape(t, [batch_size, *t.shape[1:]]), batch)
            return batch

        return tf.data.Dataset.range(count).map(take)

    dataset = tf.data.Dataset.from_generator(loader.iter_groups, output_signature=output_signature(loader.layout, tf))
    dataset = dataset.flat_map(batches_of)
    if not loader.source.is_refreshing:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(loader)))
    return dataset.prefetch(tf.data.AUTOTUNE)
