"""Keras epoch ``e`` reads epoch ``e`` of a dh_tf loader."""

from __future__ import annotations

from typing import Any

from dh_tf.errors import UsageError
from dh_tf.tf.dataset import loader_of
from dh_tf.tf.keras_callback import LazyKerasCallback


class SyncEpochs(LazyKerasCallback):
    """A Keras callback that makes Keras epoch ``e`` read epoch ``e`` of a dh_tf loader.

    Without it, each pass over the dataset is the loader's next epoch (NOTE [ Epochs of a dataset ]
    in tf/dataset.py), so a pass made before ``fit`` (``ds.take(1)``) shifts the seeded order of
    every later epoch by one.

    Args:
        data: the :class:`~dh_tf.TableLoader` that ``fit``'s dataset reads, or the dataset
            :func:`dh_tf.to_dataset` made (a dataset derived from it by ``.map`` etc. is refused:
            pass ``ds.dh_tf_loader``).

    Example:
        >>> model.fit(ds, epochs=3, callbacks=[dh_tf.SyncEpochs(ds)])
        >>> model.fit(ds.map(augment), epochs=3, callbacks=[dh_tf.SyncEpochs(ds.dh_tf_loader)])

    Raises:
        TypeError: ``data`` is neither a loader nor a dataset of ``dh_tf.to_dataset``, or is derived from one.
        UsageError: ``data`` is one of :func:`dh_tf.distributed_fit_dataset`, which needs no SyncEpochs;
            at the start of ``fit``, ``steps_per_epoch`` differs from the loader's batches per epoch
            (Keras then keeps one iterator across its epochs, so its epochs are not the loader's).
    """

    def __init__(self, data: Any) -> None:
        super().__init__()
        if getattr(data, "dh_tf_pinned_epochs", False):
            raise UsageError(
                "SyncEpochs: a dataset from dh_tf.distributed_fit_dataset already reads loader epoch e in Keras "
                "epoch e; leave SyncEpochs out (it would move the epochs its read-ahead has begun)"
            )
        self.loader = loader_of(data, "SyncEpochs")

    def on_train_begin(self, logs: Any = None) -> None:
        check_whole_epochs(self.params, len(self.loader), "SyncEpochs")

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.loader.set_epoch(epoch)


def check_whole_epochs(params: Any, batches: int, where: str) -> None:
    """Raises UsageError unless Keras' steps per epoch (``params["steps"]``; None: unknown) are ``batches``.

    With ``steps_per_epoch`` set, Keras keeps one iterator across its epochs, so Keras epoch ``e``
    is not a loader epoch (NOTE [ Keras peeks ] in keras/keras_peek.py): an epoch-exact callback refuses it.
    """
    steps = (params or {}).get("steps")
    if steps is not None and steps != batches:
        raise UsageError(
            f"{where}: fit's steps_per_epoch={steps} differs from the loader's {batches} batches per epoch, so "
            "Keras epochs would not be loader epochs and a saved or synced epoch would be another one; leave "
            "steps_per_epoch out (or equal to len(loader)), or train without this callback"
        )
