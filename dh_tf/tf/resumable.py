"""Resume a killed Keras run mid-epoch, exactly: a callback that checkpoints the model and the loader.

NOTE [ Resumable training ]
Every ``every`` steps (and at each epoch end) the callback writes the model's weights (with
the optimizer's state, Keras ``save_weights``) and the loader's state for the batches Keras has
*trained on* (Keras's step count, not what tf.data read ahead) into one directory, atomically
(write, then rename). Run the same script again and :meth:`ResumableTraining.fit` restores the
weights and the loader: the interrupted epoch continues with exactly the batches that were not
trained yet, in the uninterrupted order (NOTE [ Resuming an epoch ] in reading/state.py), as one ``fit``
call over the rest of that epoch (Keras has no "initial step", and a dataset's cardinality is
fixed, so the shorter epoch gets its own dataset, built by the user's ``make_dataset`` so that
their preprocessing is kept), then a second ``fit`` from the next epoch on. Each Keras epoch ``e``
reads loader epoch ``e``, also under a ``tf.distribute`` strategy (NOTE [ Keras peeks ] in
keras/keras_peek.py); ``steps_per_epoch`` other than an epoch's batches is refused. Steps trained after the last save are trained
again after a restart, as with any checkpoint: save more often to lose less.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dh_tf.checks import checked_keywords, int_arg
from dh_tf.errors import ArgumentTypeError, UsageError
from dh_tf.reading.loader import TableLoader
from dh_tf.tf.dataset import dataset_from_loader, loader_of
from dh_tf.tf.keras_callback import TF_KERAS, LazyKerasCallback, keras_of
from dh_tf.tf.sync_epochs import check_whole_epochs

STATE_FILE = "dh_tf_state.json"
WEIGHTS_FILE = "model.weights.h5"


class ResumableTraining(LazyKerasCallback):
    """A Keras callback that checkpoints every ``every`` steps; :meth:`fit` resumes mid-epoch.

    Args:
        directory: where the checkpoint lives (created if missing).
        every: steps between checkpoints (an int >= 1); epoch ends are always saved. (``save_every=``
            is its old name, deprecated: a ``DeprecationWarning``.)

    Raises:
        ArgumentTypeError, ArgumentError: ``every`` is not an int >= 1, ``directory`` is not a path, an
            unknown keyword (naming the closest ones), or both ``every`` and ``save_every``.

    Example:
        >>> run = dh_tf.ResumableTraining("ckpt", every=50)
        >>> ds = dh_tf.to_dataset(table, ["A", "B"], "Y", batch_size=256, shuffle=True, seed=7)
        >>> run.fit(model, ds, epochs=5)  # killed? run the script again: it goes on where it stopped
    """

    @checked_keywords("ResumableTraining", renamed={"save_every": "every"})
    def __init__(self, directory: str | os.PathLike, *, every: int = 100) -> None:
        super().__init__()
        where = "ResumableTraining"
        every = int_arg(every, "every", where, minimum=1)
        if not isinstance(directory, (str, os.PathLike)):
            raise ArgumentTypeError(f"{where}: directory must be a path (got {type(directory).__name__})")
        self.directory = Path(directory)
        self.every = every
        self.loader: TableLoader | None = None
        self._epoch = 0
        self._offset = 0  # batches of the current epoch trained before this fit call (a resumed epoch)
        self._batches = 0
        self._saved_at = 0
        self._steps = 0  # the steps per epoch fit must count (the rest of a resumed epoch, then whole epochs)

    @property
    def saved_state(self) -> dict[str, Any] | None:
        """The loader state of the last checkpoint, or None when there is none."""
        path = self.directory / STATE_FILE
        return json.loads(path.read_text())["loader"] if path.exists() else None

    def fit(
        self, model: Any, data: Any, *, epochs: int, make_dataset: Callable[[TableLoader], Any] | None = None,
        callbacks: list | None = None, **fit_options: Any,
    ) -> Any:
        """``model.fit`` over ``data`` for ``epochs`` with this callback, resumed from the checkpoint if any.

        A checkpoint taken mid-epoch resumes in two ``fit`` calls: the rest of that epoch (a dataset
        built from the loader while its resume point is pending: its first pass is exactly the
        batches not trained yet), then the later epochs. Returns the last call's ``History``.

        Args:
            model: a Keras 3 model.
            data: the :class:`~dh_tf.TableLoader` to train on, or a dataset made by :func:`dh_tf.to_dataset`.
            epochs: as ``model.fit``.
            make_dataset: builds the dataset ``fit`` trains on from the loader, for the rest of a resumed
                epoch and for the later epochs: pass it to keep your preprocessing (``lambda loader:
                dh_tf.dataset_from_loader(loader).map(augment)``); default :func:`dh_tf.dataset_from_loader`
                (with a ``to_dataset`` dataset as ``data``, that dataset for the later epochs).
            callbacks, fit_options: as ``model.fit`` (``steps_per_epoch`` must be left out).

        Raises:
            TypeError: ``data`` is neither a loader nor a ``dh_tf.to_dataset`` dataset, or is a dataset
                derived from one (pass the loader and ``make_dataset``).
            UsageError: ``model`` is a tf_keras model (Keras 3 models only); ``steps_per_epoch`` differs
                from the loader's batches per epoch (raised when ``fit`` starts).
            ValueError: the checkpoint was made for another table, seed or batch size
                (``TableLoader.load_state_dict``).
        """
        loader = loader_of(data, "ResumableTraining.fit")
        if keras_of(model) == TF_KERAS:  # NOTE [ Two Kerases ] in tf/keras_callback.py
            raise UsageError(
                "ResumableTraining.fit: resumes Keras 3 models only (its checkpoint is Keras 3's weights and optimizer "
                "state), but this model is a tf_keras one; checkpoint it with tf_keras.callbacks.BackupAndRestore, "
                "or train a Keras 3 model"
            )
        build = make_dataset or dataset_from_loader
        self.loader = loader
        callbacks = [self, *(callbacks or [])]
        state = self.saved_state
        if state is not None:
            loader.load_state_dict(state)
        if state is not None and state["batches"]:
            epoch = state["epoch"]
            self._steps = len(loader) - state["batches"]
            model.fit(build(loader), epochs=epoch + 1, initial_epoch=epoch, callbacks=callbacks, **fit_options)
        self._steps = len(loader)
        later = data if make_dataset is None and not isinstance(data, TableLoader) else build(loader)
        return model.fit(later, epochs=epochs, callbacks=callbacks, **fit_options)

    def on_train_begin(self, logs: Any = None) -> None:
        if self.loader is None:
            raise UsageError("ResumableTraining: train with run.fit(model, dataset, ...), not model.fit")
        check_whole_epochs(self.params, self._steps, "ResumableTraining")
        weights = self.directory / WEIGHTS_FILE
        if weights.exists():
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(str(weights))
        state = self.saved_state
        if state is not None:
            self._epoch, self._offset = state["epoch"], state["batches"]
            self.model._initial_epoch = state["epoch"]  # as keras.callbacks.BackupAndRestore does

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        # Keras epoch e reads loader epoch e (a resume point loaded for e is kept).
        self.loader.set_epoch(epoch)  # type: ignore[union-attr]
        if epoch != self._epoch:
            self._epoch, self._offset = epoch, 0
        self._batches = self._saved_at = self._offset

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # ``batch`` is Keras's step index in this fit's epoch: with steps_per_execution=k the hook
        # runs every k steps, so count from it, not from the calls (plus the steps of a resumed epoch
        # trained before this fit).
        self._batches = self._offset + batch + 1
        if self._batches - self._saved_at >= self.every:
            self._save(self._epoch, self._batches)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.model.stop_training and self._batches < len(self.loader):  # type: ignore[arg-type]
            # Stopped mid-epoch (EarlyStopping, TerminateOnNaN, a user's callback): Keras still ends
            # the epoch, but its rest was not trained; a restart goes on from here.
            self._save(epoch, self._batches)
            return
        self._save(epoch + 1, 0)
        self._epoch, self._offset, self._batches = epoch + 1, 0, 0

    def _save(self, epoch: int, batches: int) -> None:
        self._saved_at = batches
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = self.directory / WEIGHTS_FILE
        partial = self.directory / f"partial.{WEIGHTS_FILE}"
        self.model.save_weights(str(partial))
        state = {"loader": self.loader.state_dict(epoch=epoch, batches=batches)}  # type: ignore[union-attr]
        state_partial = self.directory / f"{STATE_FILE}.partial"
        state_partial.write_text(json.dumps(state))
        # Weights first, then the state that points at them: a kill between the two renames leaves
        # new weights with the previous state, which at worst retrains the steps since that save.
        os.replace(partial, weights)
        os.replace(state_partial, self.directory / STATE_FILE)

