"""One home for a Keras callback base that is imported lazily: importing dh_tf imports no Keras.

NOTE [ Lazy Keras callbacks ]
dh_tf's callbacks (``MetricsTable``, ``SyncEpochs``, ``ResumableTraining``) do not subclass
``keras.callbacks.Callback`` in their class statement, since that would import Keras with the module.
Their ``__new__`` makes each instance of a subclass that also derives from Keras's ``Callback``,
made once per class, so ``isinstance(cb, keras.callbacks.Callback)`` holds and Keras accepts them.
"""

from __future__ import annotations

import threading
from typing import Any

from dh_tf.errors import MissingDependencyError


def callback_base() -> type:
    """``keras.callbacks.Callback``.

    Raises:
        MissingDependencyError: Keras is not installed.
    """
    try:
        import keras
    except ImportError as e:
        raise MissingDependencyError("dh_tf's callbacks are Keras callbacks: pip install tensorflow (or keras)") from e
    return keras.callbacks.Callback


_classes: dict[type, type] = {}
_classes_lock = threading.Lock()


def keras_callback_class(cls: type) -> type:
    """``cls`` itself if it is a Keras callback already, else its subclass that also is one."""
    base = callback_base()
    if issubclass(cls, base):
        return cls
    with _classes_lock:
        if cls not in _classes:
            _classes[cls] = type(cls.__name__, (cls, base), {"__module__": cls.__module__,
                                                             "__qualname__": cls.__qualname__,
                                                             "__doc__": cls.__doc__})
        return _classes[cls]


class LazyKerasCallback:
    """Base of dh_tf's callbacks: instances are real ``keras.callbacks.Callback`` objects (NOTE [ Lazy Keras callbacks ])."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(keras_callback_class(cls))

    def __init__(self) -> None:
        callback_base().__init__(self)
