"""dh_tf: train TensorFlow/Keras models on Deephaven tables bigger than RAM.

``import dh_tf`` needs no running JVM: Deephaven and TensorFlow are imported when first used.

Example:
    >>> import dh_tf
    >>> ds = dh_tf.to_dataset(table.where("Y >= 0"), ["A", "B"], "Y", batch_size=256, shuffle=True)
    >>> model.fit(ds, epochs=3)
"""

from __future__ import annotations

from dh_tf.cache import CacheSpaceError
from dh_tf.columns import ArrayLengthError, Field, Layout
from dh_tf.follow_mode import Follower, FollowError, follow, follow_dataset
from dh_tf.loader import TableLoader, default_reader_threads
from dh_tf.metrics import MetricsTable, fit_in_background, plot_metrics
from dh_tf.pages import NullValueError
from dh_tf.predict import predict_table
from dh_tf.predict_follow import LivePredictions, predict_follow
from dh_tf.remote_source import RemoteReadError
from dh_tf.resume import ResumableTraining, SyncEpochs
from dh_tf.tf_data import dataset_from_loader, to_dataset

__version__ = "0.1.0"

__all__ = [
    "ArrayLengthError",
    "CacheSpaceError",
    "Field",
    "FollowError",
    "Follower",
    "Layout",
    "LivePredictions",
    "MetricsTable",
    "NullValueError",
    "RemoteReadError",
    "ResumableTraining",
    "SyncEpochs",
    "TableLoader",
    "__version__",
    "dataset_from_loader",
    "default_reader_threads",
    "fit_in_background",
    "follow",
    "follow_dataset",
    "plot_metrics",
    "predict_follow",
    "predict_table",
    "to_dataset",
]
