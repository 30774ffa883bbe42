"""Keras epoch ``e`` reads epoch ``e`` of a dh_tf dataset's loader."""

from __future__ import annotations

from typing import Any

from dh_tf.errors import ArgumentTypeError, UsageError
from dh_tf.reading.loader import TableLoader
from dh_tf.tf.keras_callback import LazyKerasCallback


class SyncEpochs(LazyKerasCallback):
    """A Keras callback that makes Keras epoch ``e`` read epoch ``e`` of a dh_tf dataset's loader.

    Without it, each pass over the dataset is the loader's next epoch (NOTE [ Epochs of a dataset ]
    in tf/dataset.py), so a pass made before ``fit`` (``ds.take(1)``, a strategy's symbolic build)
    shifts the seeded order of every later epoch by one.

    Example:
        >>> model.fit(ds, epochs=3, callbacks=[dh_tf.SyncEpochs(ds)])

    Raises:
        TypeError: ``dataset`` was not made by ``dh_tf.to_dataset``.
        UsageError: ``dataset`` is one of :func:`dh_tf.distributed_fit_dataset`, which needs no SyncEpochs.
    """

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        if getattr(dataset, "dh_tf_pinned_epochs", False):
            raise UsageError(
                "SyncEpochs: a dataset from dh_tf.distributed_fit_dataset already reads loader epoch e in Keras "
                "epoch e; leave SyncEpochs out (it would move the epochs its read-ahead has begun)"
            )
        loader = getattr(dataset, "dh_tf_loader", None)
        if not isinstance(loader, TableLoader):
            raise ArgumentTypeError(f"SyncEpochs: dataset must come from dh_tf.to_dataset (got {type(dataset).__name__})")
        self.loader = loader

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.loader.set_epoch(epoch)
