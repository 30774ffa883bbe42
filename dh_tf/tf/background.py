"""Run Keras ``fit`` off the calling thread: for the IDE console, whose commands hold the update graph's lock.

NOTE [ Stopping a background fit ]
:meth:`TrainingRun.stop` only sets a flag. A callback that ``fit_in_background`` appends to
``callbacks`` (after the caller's own) reads it at the end of every training batch, on the thread
running ``fit``, and sets ``model.stop_training = True``; Keras checks that flag right after the
batch callbacks, so the batch in progress finishes, the epoch ends there (``on_epoch_end`` runs,
validation too if ``fit`` has it), ``on_train_end`` runs (a :class:`MetricsTable` publishes its
last rows) and ``fit`` returns its History normally. The model keeps the weights of the last batch
and can be fitted, evaluated or saved again; Keras resets ``stop_training`` at the next ``fit``.
Nothing interrupts a running batch, so a stop takes effect within one step.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dh_tf.errors import ArgumentTypeError
from dh_tf.tf.keras_callback import LazyKerasCallback

__all__ = ["FIT_THREAD_NAME", "FitProgress", "TrainingRun", "fit_in_background"]

FIT_THREAD_NAME = "dh_tf-fit"
CALLBACKS_POSITION = 5
"""``callbacks``' index among ``fit``'s positional parameters (x, y, batch_size, epochs, verbose, callbacks) in
both Kerases."""


@dataclass(frozen=True)
class FitProgress:
    """Where a background ``fit`` is, as of one moment (:meth:`TrainingRun.progress`).

    Attributes:
        epoch: the current epoch index, from 0 (Keras's ``epoch``; with ``initial_epoch`` it starts there).
        epochs: the ``epochs`` ``fit`` was given; None before training began.
        step: training steps finished in the current epoch.
        steps_per_epoch: Keras's known steps per epoch (``params["steps"]``); None when unknown
            (e.g. an infinite dataset without ``steps_per_epoch``).
        steps_done: training steps finished in this ``fit``, all epochs.
        steps_total: every step ``fit`` will run (epochs from ``initial_epoch`` times the steps per
            epoch), or None when the steps per epoch are unknown.
        seconds_per_step: the mean time of a step since the first step ended (so graph tracing is left
            out; validation time is included), or None before two steps ended.
        stop_requested: :meth:`TrainingRun.stop` was called.
    """

    epoch: int = 0
    epochs: int | None = None
    step: int = 0
    steps_per_epoch: int | None = None
    steps_done: int = 0
    steps_total: int | None = None
    seconds_per_step: float | None = None
    stop_requested: bool = False

    @property
    def eta_s(self) -> float | None:
        """Seconds until the last step at the mean step time so far; None when either is unknown."""
        if self.steps_total is None or self.seconds_per_step is None:
            return None
        return max(self.steps_total - self.steps_done, 0) * self.seconds_per_step


class TrainingRun(concurrent.futures.Future):
    """The Future of a background ``fit`` (its History), which can also stop it and report its progress.

    Everything a ``concurrent.futures.Future`` does works as before: ``result()`` waits for the
    History and re-raises what ``fit`` raised, ``done()``, ``add_done_callback``, ``wait``. A
    stopped ``fit`` ends normally: ``result()`` returns its History. Made by :func:`fit_in_background`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()
        self._progress_lock = threading.Lock()
        self._progress = FitProgress()
        self._first_step_end: tuple[float, int] | None = None  # (monotonic time, steps_done) at the first step's end
        self.control = _RunControl(self)

    def stop(self) -> bool:
        """Asks ``fit`` to end at the end of the batch in progress (NOTE [ Stopping a background fit ]).

        Returns at once; call ``result()`` to wait for the end. Safe from any thread, and twice.

        Returns:
            True if ``fit`` was still running (it stops at its next batch end), False if it had already ended.
        """
        self._stop.set()
        return not self.done()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` was called (whether or not ``fit`` has ended since)."""
        return self._stop.is_set()

    def progress(self) -> FitProgress:
        """The progress now (a snapshot); safe from any thread."""
        with self._progress_lock:
            progress = self._progress
            first = self._first_step_end
        seconds_per_step = None
        if first is not None and progress.steps_done > first[1]:
            seconds_per_step = (time.monotonic() - first[0]) / (progress.steps_done - first[1])
        return FitProgress(
            progress.epoch, progress.epochs, progress.step, progress.steps_per_epoch, progress.steps_done,
            progress.steps_total, seconds_per_step, self.stop_requested,
        )

    def _update(self, **changes: Any) -> None:
        with self._progress_lock:
            self._progress = FitProgress(**{**vars(self._progress), **changes})
            if self._first_step_end is None and self._progress.steps_done > 0:
                self._first_step_end = (time.monotonic(), self._progress.steps_done)


class _RunControl(LazyKerasCallback):
    """The callback ``fit_in_background`` adds: records progress and stops ``fit`` on request.

    Its hooks run on the thread running ``fit`` (it is not ``async_safe``), so ``stop_training`` is
    set between batches (NOTE [ Stopping a background fit ]).
    """

    def __init__(self, run: TrainingRun) -> None:
        super().__init__()
        self._run = run

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        self._run._update(epochs=epochs, steps_per_epoch=steps, steps_total=None)
        if self._run.stop_requested:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        progress = self._run._progress
        steps_total = None
        if progress.steps_per_epoch is not None and progress.epochs is not None:
            steps_total = progress.steps_done + (progress.epochs - epoch) * progress.steps_per_epoch
        self._run._update(epoch=epoch, step=0, steps_total=steps_total)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        progress = self._run._progress
        self._run._update(step=batch + 1, steps_done=progress.steps_done + batch + 1 - progress.step)
        if self._run.stop_requested:
            self.model.stop_training = True


def fit_in_background(model: Any, *args: Any, **fit_options: Any) -> TrainingRun:
    """Runs ``model.fit(*args, **fit_options)`` on a new daemon thread; returns a Future of its History.

    For the IDE console, whose commands hold the update graph's lock (NOTE [ Console lock ]): the
    command returns at once and a :class:`MetricsTable` in ``callbacks`` ticks while the model
    trains. ``run.result()`` waits for the History (and re-raises what ``fit`` raised);
    ``run.stop()`` ends ``fit`` at the next batch end (NOTE [ Stopping a background fit ]);
    ``run.progress()`` says where it is; :func:`dh_tf.training_panel` shows all of it in the IDE.
    dh_tf datasets carry the ExecutionContext they were built in, so they read on any thread.

    Args:
        model: a compiled Keras 3 or tf_keras model.
        *args: ``model.fit``'s positional arguments.
        **fit_options: ``model.fit``'s keyword arguments. One more callback is appended to ``callbacks``
            (in a new list: the caller's is not changed).

    Returns:
        a :class:`TrainingRun`, a ``concurrent.futures.Future`` of the History.

    Raises:
        TypeError: ``callbacks`` is not None, a list or a tuple.

    Example:
        >>> metrics = dh_tf.MetricsTable(every=10, metrics=["loss", "accuracy"])
        >>> training = dh_tf.fit_in_background(model, ds, epochs=5, callbacks=[metrics])
        >>> training.stop()   # later, from any thread: fit ends after the batch in progress
    """
    run = TrainingRun()
    args = list(args)
    if len(args) > CALLBACKS_POSITION:
        args[CALLBACKS_POSITION] = _with_control(args[CALLBACKS_POSITION], run)
    else:
        fit_options["callbacks"] = _with_control(fit_options.get("callbacks"), run)

    def fit() -> None:
        if not run.set_running_or_notify_cancel():
            return
        try:
            run.set_result(model.fit(*args, **fit_options))
        except BaseException as error:
            run.set_exception(error)

    threading.Thread(target=fit, name=FIT_THREAD_NAME, daemon=True).start()
    return run


def _with_control(callbacks: Any, run: TrainingRun) -> list[Any]:
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise ArgumentTypeError(
            f"fit_in_background: callbacks must be None, a list or a tuple of Keras callbacks "
            f"(got {type(callbacks).__name__})"
        )
    return [*(callbacks or ()), run.control]
