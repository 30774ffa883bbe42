"""A live table's batches as an infinite ``tf.data.Dataset`` (NOTE [ Follow mode ] in ``live/follow.py``)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from dh_tf.checks import checked_keywords
from dh_tf.keras.keras_peek import keras_is_peeking
from dh_tf.live.follow import DEFAULT_PREFETCH, Follower
from dh_tf.reading.layout import ColumnSpec
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.padding import PadTo
from dh_tf.tf.specs import import_tensorflow, output_signature


@checked_keywords("follow_dataset", renamed={"queue_pages": "prefetch"})
def follow_dataset(
    table: Any,
    features: ColumnSpec,
    label: ColumnSpec | None = None,
    *,
    batch_size: int = 32,
    start: str = "now",
    max_wait: float | None = None,
    max_rows: int | None = None,
    max_batches: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
    page_rows: int | None = None,
    on_overflow: str = "drop",
    sample_weight: str | None = None,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    dtype: Any = "float32",
    label_dtype: Any = None,
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
    interval_s: float | None = None,
) -> Any:
    """Deprecated: ``dh_tf.to_dataset(table, features, label, follow=True, ...)`` is the same dataset.

    Takes the arguments of :func:`dh_tf.follow` and returns :func:`live_dataset` of them, with a
    ``DeprecationWarning``; it goes in the next release.

    Raises:
        As :func:`dh_tf.follow`; MissingDependencyError (an ImportError): TensorFlow is not installed.
    """
    warnings.warn(
        "follow_dataset is deprecated; use dh_tf.to_dataset(table, features, label, follow=True, ...), which takes "
        "the same options; follow_dataset goes in the next release",
        DeprecationWarning,
        stacklevel=3,  # the caller of checked_keywords' wrapper
    )
    options = {name: value for name, value in locals().items() if name not in ("table", "features", "label")}
    return live_dataset(table, features, label, options, where="follow_dataset")


def live_dataset(table: Any, features: ColumnSpec, label: ColumnSpec | None, options: dict[str, Any], where: str) -> Any:
    """A ``tf.data.Dataset`` of the batches of :func:`dh_tf.follow` (``options`` its keyword arguments), for ``model.fit``.

    What ``to_dataset(..., follow=True)`` returns; ``where`` names the function the user called in
    error messages. Without ``max_rows``/``max_batches`` its cardinality is infinite: pass ``steps_per_epoch``
    (``model.fit(ds, steps_per_epoch=100, epochs=5)``; Keras keeps one iterator across epochs). The
    arguments are checked now. Each pass over the dataset is a new follower (its ``start`` counted
    from the moment the pass starts; the first pass from this call), built on a TensorFlow thread
    from the first follower's source (which carries the caller's ExecutionContext); it stops,
    removing its listener and ending its reader, when TensorFlow releases the iterator. Keras 3's
    first-batch peek under a ``tf.distribute`` strategy is no pass: the next pass gets the batches
    it took again, then the same follower's (NOTE [ Keras peeks ] in keras/keras_peek.py), so no row
    is lost or repeated. The batch dimension is ``None`` (a flush after ``max_wait`` is partial).

    Raises:
        As :func:`dh_tf.follow`; MissingDependencyError (an ImportError): TensorFlow is not installed.
    """
    tf = import_tensorflow()
    first: list[Follower] = [Follower(table, features, label, where=where, **options)]
    signature = output_signature(first[0].layout, tf)
    infinite = options.get("max_rows") is None and options.get("max_batches") is None
    source = first[0].source
    # Later passes follow the first one's source (which has its interval_s), with its page sizes.
    later = {name: value for name, value in options.items() if name != "interval_s"}
    later.update(prefetch=first[0].prefetch, page_rows=first[0].page_rows)

    key = object()  # what this dataset's passes look for in a Keras peek (dataset.dh_tf_peek_keys)
    peeked: list[tuple[Follower, Iterator[Any], list[Any]]] = []  # left by a peek for the next pass

    def batches() -> Iterator[Any]:
        peek = keras_is_peeking(key)
        if peeked:
            follower, rows, replay = peeked.pop()
        else:
            follower = first.pop() if first else Follower(source, features, label, where=where, **later)
            rows, replay = iter(follower), []
        handed: list[Any] = []
        try:
            for batch in itertools.chain(replay, rows):
                if peek:
                    handed.append(batch)
                yield batch
        finally:
            if peek:  # NOTE [ Keras peeks ]: the next pass gets these batches again, then the same follower's
                peeked.append((follower, rows, handed))
            else:
                rows.close()  # type: ignore[attr-defined]  # Follower.__iter__ is a generator
                follower.stop()

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if infinite:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    dataset.dh_tf_peek_keys = (key,)
    return dataset
