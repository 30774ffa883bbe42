"""dh_tf: train TensorFlow/Keras models on Deephaven tables bigger than RAM.

``import dh_tf`` needs no running JVM: Deephaven and TensorFlow are imported when first used.
The layers, bottom up (the design map, docs/design-map.md): ``sources/`` (where rows come from),
``reading/`` (which rows, in what order, and how pages become batches), ``tf/`` (the
TensorFlow/Keras side), ``keras/`` (Keras 3 on any backend, without TensorFlow), ``live/`` (live
tables), ``write/`` (results back into tables).

Example:
    >>> import dh_tf
    >>> ds = dh_tf.to_dataset(table.where("Y >= 0"), ["A", "B"], "Y", batch_size=256, shuffle=True)
    >>> model.fit(ds, epochs=3)
"""

from __future__ import annotations

from dh_tf.errors import (
    ArgumentError,
    ArgumentTypeError,
    ArrayLengthError,
    CacheError,
    CacheSpaceError,
    Error,
    FollowError,
    MissingDependencyError,
    NullValueError,
    RemoteReadError,
    RemoteWriteError,
    TableChangeError,
    UsageError,
)
from dh_tf.keras.py_dataset import to_py_dataset
from dh_tf.live.follow import Follower, follow
from dh_tf.reading.loader import TableLoader, default_reader_threads
from dh_tf.sources.split import split
from dh_tf.tf.adapt import adapt, integer_codes, vocabulary
from dh_tf.tf.background import TrainingRun, fit_in_background
from dh_tf.tf.dataset import dataset_from_loader, to_dataset
from dh_tf.tf.follow_dataset import follow_dataset
from dh_tf.tf.keras_workers import FitDataset, distributed_fit_dataset
from dh_tf.tf.resumable import ResumableTraining
from dh_tf.tf.sync_epochs import SyncEpochs
from dh_tf.write.metrics_plot import plot_metrics
from dh_tf.write.metrics_table import MetricsTable
from dh_tf.write.predict_follow import LivePredictions, predict_follow
from dh_tf.write.predict_table import predict_table
from dh_tf.write.training_panel import training_panel

__version__ = "0.2.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "ArrayLengthError",
    "CacheError",
    "CacheSpaceError",
    "Error",
    "FitDataset",
    "FollowError",
    "Follower",
    "LivePredictions",
    "MetricsTable",
    "MissingDependencyError",
    "NullValueError",
    "RemoteReadError",
    "RemoteWriteError",
    "ResumableTraining",
    "SyncEpochs",
    "TableChangeError",
    "TableLoader",
    "TrainingRun",
    "UsageError",
    "__version__",
    "adapt",
    "dataset_from_loader",
    "default_reader_threads",
    "distributed_fit_dataset",
    "fit_in_background",
    "follow",
    "follow_dataset",
    "integer_codes",
    "plot_metrics",
    "predict_follow",
    "predict_table",
    "split",
    "to_dataset",
    "to_py_dataset",
    "training_panel",
    "vocabulary",
]

_DEPRECATED = {"Field": "dh_tf.reading.layout", "Layout": "dh_tf.reading.layout"}


def __getattr__(name: str) -> object:
    """Old public names kept for one release, with a DeprecationWarning."""
    if name in _DEPRECATED:
        import importlib
        import warnings

        warnings.warn(
            f"dh_tf.{name} is internal and leaves the public API in the next release; import it from "
            f"{_DEPRECATED[name]} if you must",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_DEPRECATED[name]), name)
    raise AttributeError(f"module 'dh_tf' has no attribute {name!r}")
