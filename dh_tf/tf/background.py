"""Run Keras ``fit`` off the calling thread: for the IDE console, whose commands hold the update graph's lock."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

FIT_THREAD_NAME = "dh_tf-fit"


def fit_in_background(model: Any, *args: Any, **fit_options: Any) -> concurrent.futures.Future:
    """Runs ``model.fit(*args, **fit_options)`` on a new daemon thread; returns a Future of its History.

    For the IDE console, whose commands hold the update graph's lock (NOTE [ Console lock ]): the
    command returns at once and a :class:`MetricsTable` in ``callbacks`` ticks while the model
    trains. ``future.result()`` waits for the History (and re-raises what ``fit`` raised). dh_tf
    datasets carry the ExecutionContext they were built in, so they read on any thread.

    Example:
        >>> metrics = dh_tf.MetricsTable(every=10, metrics=["loss", "accuracy"])
        >>> training = dh_tf.fit_in_background(model, ds, epochs=5, callbacks=[metrics])
    """
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(model.fit(*args, **fit_options))
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(target=run, name=FIT_THREAD_NAME, daemon=True).start()
    return future
