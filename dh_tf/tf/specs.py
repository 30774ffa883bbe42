"""TensorFlow, imported lazily, and the ``tf.TensorSpec`` structure of a layout's batches."""

from __future__ import annotations

from typing import Any

from dh_tf.errors import MissingDependencyError
from dh_tf.reading.layout import Layout


def import_tensorflow() -> Any:
    """Imports TensorFlow, or raises ImportError with an install hint."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise MissingDependencyError(
            "dh_tf.to_dataset needs TensorFlow: pip install tensorflow (or tensorflow-cpu)"
        ) from e
    return tf


def output_signature(layout: Layout, tf: Any) -> Any:
    """The ``tf.TensorSpec`` structure of one group, rows dimension unknown."""
    specs = [tf.TensorSpec(shape=(None, *field.shape), dtype=tf.as_dtype(field.dtype)) for field in layout.fields]
    return layout.assemble(specs)
