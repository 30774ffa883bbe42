"""Whether a pass over dh_tf data is Keras 3's first-batch peek, which must not count as an epoch.

NOTE [ Keras peeks ]
Inside a ``tf.distribute`` strategy, Keras 3's ``fit`` and ``evaluate`` build the model from one
batch pulled from a fresh iterator of the dataset, then drop that iterator and start again
(``_maybe_symbolic_build`` in ``keras/src/backend/tensorflow/trainer.py``, then
``epoch_iterator.reset()``; the JAX and PyTorch trainers' ``_symbolic_build`` likewise, which
``to_py_dataset`` asks about with :func:`in_keras_build`). The data side cannot tell that pass from an epoch: tf.data and the
strategy read ahead (measured: 4 or more batches), so a small epoch is read to its end by the peek
too. So a pass asks, when it starts, whether some thread is inside that build for a Keras data
adapter whose dataset carries this pass's key (``dataset.dh_tf_peek_keys``); if so it is a *peek*:
it reads the epoch the next pass would read, from the same resume point, and moves nothing (the
loader's epoch and resume point, a follower's rows: the next pass gets them again). Passes made by
the user outside ``fit`` still count (NOTE [ Epochs of a dataset ] in tf/dataset.py).

With ``steps_per_epoch`` set, Keras keeps one iterator across its epochs
(``keras/src/trainers/epoch_iterator.py``), so a Keras epoch is not a pass: the callbacks that
save or set loader epochs (``SyncEpochs``, ``ResumableTraining``) refuse a ``steps_per_epoch``
other than the loader's batches per epoch when ``fit`` starts (Keras' ``params["steps"]``).

This reads Keras' private frame and adapter names (``_maybe_symbolic_build``, ``iterator``,
``data_adapter._dataset``); ``tests/test_keras_epochs.py`` fails if a Keras release renames them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

BUILD_FUNCTIONS = ("_symbolic_build", "_maybe_symbolic_build")
"""The Keras 3 trainer methods that build a model from one batch (NOTE [ Keras peeks ])."""


def build_frames(frame: Any) -> Iterator[Any]:
    """The frames of Keras 3's first-batch build in the stack that ends at ``frame``, innermost first."""
    while frame is not None:
        if frame.f_code.co_name in BUILD_FUNCTIONS and "keras" in frame.f_code.co_filename:
            yield frame
        frame = frame.f_back


def in_keras_build(frame: Any) -> bool:
    """True when the stack that ends at ``frame`` is inside Keras 3's first-batch build."""
    return any(True for _ in build_frames(frame))


def keras_is_peeking(key: Any) -> bool:
    """True when a thread is inside Keras 3's first-batch build over a dataset that carries ``key``."""
    for top in sys._current_frames().values():
        for frame in build_frames(top):
            adapter = getattr(frame.f_locals.get("iterator"), "data_adapter", None)
            if any(carried is key for carried in peek_keys(getattr(adapter, "_dataset", None))):
                return True
    return False


def peek_keys(dataset: Any) -> tuple[Any, ...]:
    """The keys a dh_tf dataset carries (its loaders or followers), empty for any other object."""
    return tuple(getattr(dataset, "dh_tf_peek_keys", ()))
