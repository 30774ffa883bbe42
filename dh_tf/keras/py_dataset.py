"""``to_py_dataset``: a Deephaven table as a ``keras.utils.PyDataset``, for Keras 3 on any backend.

TensorFlow, JAX and PyTorch-backed Keras all take a ``PyDataset`` in ``fit``, ``evaluate`` and
``predict``; nothing here imports TensorFlow (``KERAS_BACKEND=jax`` trains without it installed).
The batches come from a :class:`~dh_tf.TableLoader`, served in order (NOTE [ PyDataset epochs ] in
keras/epoch_batches.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from dh_tf.checks import checked_keywords
from dh_tf.errors import ArgumentError, MissingDependencyError, UsageError
from dh_tf.keras.epoch_batches import EpochBatches
from dh_tf.keras.keras_peek import in_keras_build
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.loader import SHUFFLE_BLOCK_ROWS, TableLoader
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.options import LOADER_OPTIONS, pick
from dh_tf.reading.padding import PadTo

_WHERE = "to_py_dataset"
_PARALLEL = (
    "dh_tf reads pages on its own reader threads (reader_threads=) and serves an epoch's batches in order, "
    "so Keras' worker pool would only shuffle the order; leave it out"
)


@checked_keywords(_WHERE)
def to_py_dataset(
    table: Any,
    features: ColumnSpec,
    label: ColumnSpec | None = None,
    *,
    batch_size: int = 32,
    page_rows: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    sample_weight: str | None = None,
    dtype: Any = "float32",
    label_dtype: Any = None,
    prefetch: int = 2,
    reader_threads: int | None = None,
    cache: bool | str | os.PathLike = False,
    shuffle_block_rows: int = SHUFFLE_BLOCK_ROWS,
    read_path: str = "auto",
    num_shards: int = 1,
    shard_index: int = 0,
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
    workers: int = 1,
    use_multiprocessing: bool = False,
) -> Any:
    """A static Deephaven table as a ``keras.utils.PyDataset``, for Keras 3 on TensorFlow, JAX or PyTorch.

    Batch ``i`` of an epoch is batch ``i`` of the loader's epoch: every row once per epoch, in dh_tf's
    order (``shuffle``/``seed``), ``len()`` exact, each page read once; ``predict`` returns one
    result per row, in row order (without ``shuffle``). The batches are numpy arrays: ``x``, ``(x, y)``
    or ``(x, y, w)``; a dict of inputs stays a dict; String columns are object arrays of ``str``
    (which only a TensorFlow-backed model takes, e.g. through ``StringLookup``: on JAX or PyTorch,
    make integer codes in the engine with :func:`dh_tf.integer_codes`). Batches are served in order
    (NOTE [ PyDataset epochs ] in keras/epoch_batches.py), so train with ``model.fit(ds,
    shuffle=False)``: Keras' default ``shuffle=True`` shuffles a PyDataset's batch indices, which this
    dataset refuses with a :class:`~dh_tf.UsageError` when the epoch begins; shuffle rows with
    ``shuffle=True`` here instead. Keras epoch ``e`` reads the loader's next epoch, moving on when
    an epoch was served whole (Keras' first-batch peek does not count); ``ds.loader`` is the loader:
    ``dh_tf.SyncEpochs(ds.loader)`` pins Keras epoch ``e`` to loader epoch ``e``, and
    ``ds.loader.state_dict()`` / ``load_state_dict`` resume at epoch boundaries (a mid-epoch resume point
    is refused; :class:`dh_tf.ResumableTraining` is for :func:`dh_tf.to_dataset`).

    Args:
        table: a static ``deephaven.table.Table`` or ``pydeephaven`` table (for a refreshing one pass
            ``table.snapshot()``: Keras keeps a PyDataset's length for every epoch).
        features, label: as :class:`~dh_tf.TableLoader`.
        batch_size, page_rows, shuffle, seed, drop_remainder, nulls, sample_weight, dtype, label_dtype: as
            :class:`~dh_tf.TableLoader`. Shuffling is off unless ``shuffle=True``.
        prefetch, reader_threads, cache, shuffle_block_rows, read_path, num_shards, shard_index, pad_to: as
            :class:`~dh_tf.TableLoader`.
        padding, truncating, pad_value: as :class:`~dh_tf.TableLoader`.
        workers, use_multiprocessing: ``keras.utils.PyDataset``'s; only 1 and False (dh_tf reads with its
            own threads, and Keras' pool would fetch batches out of order).

    Returns:
        A ``keras.utils.PyDataset`` with ``.loader`` (its :class:`~dh_tf.TableLoader`) and ``close()``.

    Example:
        >>> train = dh_tf.to_py_dataset(t.where("Split = `train`"), ["A", "B"], "Label", batch_size=256,
        ...                             shuffle=True, seed=7)
        >>> model.fit(train, epochs=3, shuffle=False)  # KERAS_BACKEND=jax, torch or tensorflow

    Raises:
        TypeError (ArgumentTypeError): as :class:`~dh_tf.TableLoader`; an unknown keyword (the message names
            the closest ones).
        ValueError (ArgumentError): as :class:`~dh_tf.TableLoader`; ``workers`` other than 1 (or 0),
            ``use_multiprocessing=True``, or a refreshing table.
        ImportError (MissingDependencyError): Keras 3 is not installed.
    """
    _check_parallel(workers, use_multiprocessing)
    options = pick(locals(), LOADER_OPTIONS)
    if getattr(table, "is_refreshing", False):
        raise ArgumentError(
            f"{_WHERE}: table must be static, but this table is refreshing (Keras keeps a PyDataset's length for "
            "every epoch, and each epoch of a refreshing table has its own size); pass table.snapshot(), or use "
            "dh_tf.to_dataset"
        )
    cls = _dataset_class()
    return cls(EpochBatches(TableLoader(table, features, label, **options), _WHERE))


def _check_parallel(workers: Any, use_multiprocessing: Any) -> None:
    """Refuses Keras' worker pool (PyDataset's ``workers`` > 1, ``use_multiprocessing=True``)."""
    if workers not in (0, 1) or isinstance(workers, bool):
        raise ArgumentError(f"{_WHERE}: workers must be 1 (got workers={workers!r}); {_PARALLEL}")
    if use_multiprocessing is not False:
        raise ArgumentError(
            f"{_WHERE}: use_multiprocessing must be False (got use_multiprocessing={use_multiprocessing!r}); "
            f"{_PARALLEL}"
        )


def import_keras() -> Any:
    """Imports Keras 3, or raises MissingDependencyError with the install line."""
    try:
        import keras
    except ImportError as e:
        raise MissingDependencyError(
            f"dh_tf.{_WHERE} needs Keras 3: pip install keras, and a backend: 'dh-tf[jax]' (jax), torch or tensorflow"
        ) from e
    if not hasattr(getattr(keras, "utils", None), "PyDataset"):
        raise MissingDependencyError(f"dh_tf.{_WHERE} needs Keras 3 (keras.utils.PyDataset): pip install 'keras>=3'")
    return keras


_CLASSES: dict[type, type] = {}


def _dataset_class() -> type:
    """The PyDataset subclass, made once per Keras (importing dh_tf imports no Keras)."""
    base = import_keras().utils.PyDataset
    if base not in _CLASSES:
        _CLASSES[base] = type("TablePyDataset", (_TablePyDatasetMixin, base), {"__module__": __name__})
    return _CLASSES[base]


class _TablePyDatasetMixin:
    """The methods of ``to_py_dataset``'s PyDataset (mixed into ``keras.utils.PyDataset`` when Keras is imported)."""

    def __init__(self, batches: EpochBatches) -> None:
        super().__init__(workers=1, use_multiprocessing=False)  # type: ignore[call-arg]
        self._batches = batches

    @property
    def loader(self) -> TableLoader:
        """The :class:`~dh_tf.TableLoader` read (``set_epoch``, ``state_dict``, ``load_state_dict``)."""
        return self._batches.loader

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> Any:
        return self._batches.batch(index)

    def on_epoch_begin(self) -> None:
        """Called by Keras when an epoch (or its first-batch build) begins; refuses ``fit(shuffle=True)``."""
        if _keras_shuffles(self, sys._getframe(1)) and len(self) > 1:
            raise UsageError(
                f"{_WHERE}: model.fit(..., shuffle=True), Keras' default, shuffles a PyDataset's batch indices, but "
                "this PyDataset serves each epoch's batches in dh_tf's order, reading each page once; call "
                "model.fit(..., shuffle=False), and let dh_tf shuffle the rows with "
                "dh_tf.to_py_dataset(..., shuffle=True, seed=...)"
            )
        self._batches.begin(peek=in_keras_build(sys._getframe(1)))

    def on_epoch_end(self) -> None:
        """Called by Keras when an epoch ends (also after its first-batch build)."""
        self._batches.end()

    def close(self) -> None:
        """Stops the pass in progress and closes the loader (its epoch cache). Safe to call twice."""
        self._batches.close()
        self._batches.loader.close()

    @property
    def workers(self) -> int:
        return 1

    @workers.setter
    def workers(self, value: int) -> None:
        _check_parallel(value, False)

    @property
    def use_multiprocessing(self) -> bool:
        return False

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        _check_parallel(1, value)


def _keras_shuffles(dataset: Any, frame: Any) -> bool:
    """True when the Keras data adapter calling ``on_epoch_begin`` shuffles ``dataset``'s batch indices."""
    while frame is not None:
        adapter = frame.f_locals.get("self")
        if getattr(adapter, "py_dataset", None) is dataset:
            return bool(getattr(adapter, "shuffle", False))
        frame = frame.f_back
    return False
