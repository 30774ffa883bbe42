"""One home for a Keras callback base that is imported lazily: importing dh_tf imports no Keras.

NOTE [ Lazy Keras callbacks ]
dh_tf's callbacks (``MetricsTable``, ``SyncEpochs``, ``ResumableTraining``) do not subclass
``keras.callbacks.Callback`` in their class statement, since that would import Keras with the module.
Their ``__new__`` makes each instance of a subclass that also derives from a Keras ``Callback``,
made once per class and Keras, so ``isinstance(cb, <that Keras>.callbacks.Callback)`` holds and
Keras accepts them.

NOTE [ Two Kerases ]
Two Kerases train TensorFlow models: Keras 3 (``import keras``) and the legacy Keras 2,
``tf_keras``, which ``tf.keras`` is when ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is
imported (what multi-worker ``fit`` needs: tf/keras_workers.py). Their ``fit`` calls differ in what
they ask of a callback (tf_keras calls ``_implements_train_batch_hooks`` and friends, which Keras 3's
``Callback`` lacks), so a callback must derive from the ``Callback`` of the Keras that trains. A new
callback derives from tf_keras's when ``TF_USE_LEGACY_KERAS`` is set as TensorFlow reads it
(``1``, ``true``, ``True``), else from Keras 3's; and when ``fit`` hands it a model of the other
Keras (``set_model``, the first call both ``fit`` make, before any other), the instance moves to its
class for that Keras, so a callback built before the model, or a ``tf_keras`` model used without the
variable, still works. A model of neither Keras is refused there with a
:class:`~dh_tf.errors.UsageError` naming both.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from dh_tf.errors import MissingDependencyError, UsageError

KERAS3, TF_KERAS = "keras", "tf_keras"
"""The two Kerases, by the top-level package of their classes (NOTE [ Two Kerases ])."""


def legacy_keras_requested() -> bool:
    """True when ``TF_USE_LEGACY_KERAS`` asks TensorFlow for tf_keras, exactly as TensorFlow reads it."""
    return os.environ.get("TF_USE_LEGACY_KERAS") in ("true", "True", "1")


def callback_base(keras_name: str | None = None) -> type:
    """The ``Callback`` class of ``keras_name`` (``"keras"`` or ``"tf_keras"``); by default of the Keras in use.

    Raises:
        MissingDependencyError: that Keras is not installed.
    """
    if keras_name is None:
        keras_name = TF_KERAS if legacy_keras_requested() else KERAS3
    if keras_name == TF_KERAS:
        try:
            import tf_keras
        except ImportError as e:
            raise MissingDependencyError(
                "dh_tf's callbacks for tf_keras (TF_USE_LEGACY_KERAS=1) need tf_keras: pip install 'dh-tf[tf-keras]' "
                "(tf-keras of your TensorFlow's minor version, e.g. tf-keras~=2.21.0 for TensorFlow 2.21)"
            ) from e
        return tf_keras.callbacks.Callback
    try:
        import keras
    except ImportError as e:
        raise MissingDependencyError("dh_tf's callbacks are Keras callbacks: pip install tensorflow (or keras)") from e
    return keras.callbacks.Callback


def keras_of(model: Any) -> str | None:
    """``"keras"`` or ``"tf_keras"``: the Keras whose ``Model`` ``model`` is; None for neither."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root in (KERAS3, TF_KERAS):
            return root
    return None


_classes: dict[tuple[type, str], type] = {}
_classes_lock = threading.Lock()


def keras_callback_class(cls: type, keras_name: str | None = None) -> type:
    """``cls``'s subclass that also is a ``Callback`` of ``keras_name`` (default: the Keras in use), made once."""
    base = callback_base(keras_name)
    if issubclass(cls, base):
        return cls
    key = (getattr(cls, "_dh_tf_lazy_class", cls), base.__module__.split(".")[0])
    with _classes_lock:
        if key not in _classes:
            _classes[key] = type(cls.__name__, (key[0], base), {
                "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                "_dh_tf_lazy_class": key[0],
            })
        return _classes[key]


class LazyKerasCallback:
    """Base of dh_tf's callbacks: instances are real Keras ``Callback`` objects (NOTE [ Lazy Keras callbacks ]).

    Which Keras: NOTE [ Two Kerases ]. Subclasses that override ``set_model`` must call this one first.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(keras_callback_class(cls))

    def __init__(self) -> None:
        _keras_base(type(self)).__init__(self)

    def set_model(self, model: Any) -> None:
        """Called by ``fit`` first: moves this callback to the Keras of ``model`` if it is the other one.

        Raises:
            UsageError: ``model`` is a model of neither Keras 3 nor tf_keras.
        """
        keras_name = keras_of(model)
        if keras_name is None:
            raise UsageError(
                f"{type(self).__name__}: a dh_tf callback works with a Keras 3 (keras) or tf_keras model "
                f"(got {type(model).__module__}.{type(model).__name__})"
            )
        if keras_name != _keras_base(type(self)).__module__.split(".")[0]:
            self.__class__ = keras_callback_class(type(self), keras_name)
            base_attributes = object.__new__(self.__class__)
            _keras_base(self.__class__).__init__(base_attributes)  # the new base's own attributes, ours kept
            for name, value in vars(base_attributes).items():
                self.__dict__.setdefault(name, value)
        _keras_base(type(self)).set_model(self, model)


def _keras_base(cls: type) -> type:
    """The Keras ``Callback`` class among ``cls``'s bases."""
    return next(c for c in cls.__mro__ if c.__name__ == "Callback" and c.__module__.split(".")[0] in (KERAS3, TF_KERAS))
