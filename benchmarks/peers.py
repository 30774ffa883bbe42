"""The in-memory ceiling and the peers users pick, each built as a ``tf.data`` pipeline over the benchmark file.

Builders take ``(case, table, stack)`` like those of :mod:`benchmarks.loaders` (``table`` unused:
none of these reads through Deephaven) and return a re-iterable ``tf.data.Dataset`` of
``(features [b, 16] float32, label [b] int32)``, or, for :func:`gather_permutation`, a zero-argument
function returning the next epoch's dataset.

- :func:`ceiling`: the fastest known way to hand the same in-memory arrays to tf.data:
  ``from_tensor_slices`` over a ``[n // b, b, 16]`` view (one element per batch, no per-row work, no
  function capturing the arrays), tf.data's graph rewrites on or off (:func:`no_rewrites`).
- :func:`pyarrow_read_table`: ``pyarrow.parquet.read_table`` -> numpy -> the same view: the in-memory
  peer; as an epoch-1 arm its build (the decode) is inside the timing.
- :func:`tfdata_memory_cache` / :func:`tfdata_save_load`: pyarrow ``iter_batches`` -> ``from_generator``
  then ``Dataset.cache()`` in memory / ``Dataset.save`` once and ``Dataset.load`` every epoch.
- :func:`hf_datasets`: HuggingFace ``Dataset.from_parquet(...).to_tf_dataset(batch_size=b, ...)`` at its
  documented defaults (``prefetch=True``), optionally ``shuffle=True``.
- :func:`gather_permutation` and :func:`tfdata_shuffle`: in-memory shuffles: a full permutation drawn
  per epoch and gathered batch by batch; tf.data's ``shuffle(buffer)`` over rows.

Only numpy, pyarrow and the standard library at module level (the parent imports the benchmarks).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks.data import FEATURES, LABEL, arrow_to_numpy, load_numpy
from benchmarks.loaders import Case, _tf, pyarrow_iter_batches

SHUFFLE_BUFFER_ROWS = 1 << 18
"""Rows in tf.data's ``shuffle`` buffer (17 MiB of these rows); its quality is measured, not assumed."""
_ARRAYS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
"""One decoded copy of each file per process, shared by the in-memory arms (their memory is not the question)."""
_VIEWS: dict[tuple[str, int], Any] = {}
"""The ceiling's dataset per (file, batch size): the arms with rewrites on and off share its tensors."""


def no_rewrites(tf: Any) -> Any:
    """``tf.data.Options`` with tf.data's default graph rewrites, autotuning, injected prefetch and warm start off."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_optimization.inject_prefetch = False
    options.autotune.enabled = False
    options.experimental_warm_start = False
    return options


def shared_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``load_numpy(path)``, decoded once per process."""
    if path not in _ARRAYS:
        _ARRAYS[path] = load_numpy(Path(path))
    return _ARRAYS[path]


def batch_view(x: np.ndarray, y: np.ndarray, batch_size: int) -> Any:
    """``from_tensor_slices`` over ``[n // b, b, 16]`` and ``[n // b, b]`` views, the short tail after them.

    One dataset element per batch; the arrays are dataset inputs, not constants captured by a function.
    """
    tf = _tf()
    full = len(y) // batch_size * batch_size
    k = x.shape[1]
    dataset = tf.data.Dataset.from_tensor_slices(
        (x[:full].reshape(-1, batch_size, k), y[:full].reshape(-1, batch_size)))
    if full < len(y):
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors((x[full:], y[full:])))
    return dataset.prefetch(tf.data.AUTOTUNE)


def ceiling(rewrites: bool) -> Callable[..., Any]:
    """The in-memory ceiling: :func:`batch_view` of arrays decoded once, graph rewrites on or off."""

    def build(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
        key = (case.path, case.batch_size)
        if key not in _VIEWS:
            _VIEWS[key] = batch_view(*shared_arrays(case.path), case.batch_size)
        return _VIEWS[key] if rewrites else _VIEWS[key].with_options(no_rewrites(_tf()))

    return build


def pyarrow_read_table(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """``pq.read_table`` (this build decodes the file: epoch-1 arms time it) -> numpy -> :func:`batch_view`."""
    x, y = arrow_to_numpy(pq.read_table(case.path, columns=[*FEATURES, LABEL]))
    return batch_view(x, y, case.batch_size)


def tfdata_memory_cache(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """pyarrow ``iter_batches`` -> ``from_generator`` -> ``Dataset.cache()`` in memory (the first epoch fills it)."""
    tf = _tf()
    return pyarrow_iter_batches(case, table, stack).cache().prefetch(tf.data.AUTOTUNE)


def tfdata_save_load(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """``Dataset.save`` of the pyarrow ``iter_batches`` pipeline (here, once), then ``Dataset.load`` per epoch."""
    tf = _tf()
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_tfsave_"))
    source = pyarrow_iter_batches(case, table, stack)
    source.save(directory)
    return tf.data.Dataset.load(directory, element_spec=source.element_spec).prefetch(tf.data.AUTOTUNE)


def hf_datasets(shuffle: bool) -> Callable[..., Any]:
    """HuggingFace ``Dataset.from_parquet`` (its Arrow cache in a temporary directory) ``.to_tf_dataset``.

    ``to_tf_dataset(batch_size=b, columns=F0..F15, label_cols="Label", shuffle=shuffle)`` with its
    defaults otherwise (``prefetch=True``, ``num_workers=0``); the feature dict is stacked to ``[b, 16]``.
    """

    def build(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
        import datasets

        tf = _tf()
        datasets.disable_progress_bars()
        cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_hf_"))
        frame = datasets.Dataset.from_parquet(case.path, cache_dir=cache_dir, columns=[*FEATURES, LABEL])
        dataset = frame.to_tf_dataset(batch_size=case.batch_size, columns=FEATURES, label_cols=LABEL, shuffle=shuffle)
        return dataset.map(lambda features, label: (
            tf.stack([tf.cast(features[name], tf.float32) for name in FEATURES], axis=1), tf.cast(label, tf.int32)))

    return build


def gather_permutation(case: Case, table: Any, stack: contextlib.ExitStack) -> Callable[[], Any]:
    """In memory, a full permutation per epoch: ``rng.permutation(n)`` (inside the epoch) gathered per batch.

    Returns a function that draws the next epoch's permutation and returns its dataset; the arrays are
    constant tensors made once and captured by the gather, so tf.data's rewrites are off (:func:`no_rewrites`:
    with them on, every new iterator would serialize the whole table).
    """
    tf = _tf()
    x, y = shared_arrays(case.path)
    xt, yt, b = tf.constant(x), tf.constant(y), case.batch_size
    rng = np.random.default_rng(0)

    def epoch() -> Any:
        order = rng.permutation(len(y))
        full = len(order) // b * b
        indices = tf.data.Dataset.from_tensor_slices(order[:full].reshape(-1, b))
        if full < len(order):
            indices = indices.concatenate(tf.data.Dataset.from_tensors(order[full:]))
        batches = indices.map(lambda idx: (tf.gather(xt, idx), tf.gather(yt, idx)))
        return batches.prefetch(2).with_options(no_rewrites(tf))

    return epoch


def tfdata_shuffle(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """In memory, the tf.data guide's way: ``from_tensor_slices((x, y)).shuffle(SHUFFLE_BUFFER_ROWS).batch(b)``."""
    tf = _tf()
    x, y = shared_arrays(case.path)
    rows = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(SHUFFLE_BUFFER_ROWS, seed=0,
                                                              reshuffle_each_iteration=True)
    return rows.batch(case.batch_size).prefetch(tf.data.AUTOTUNE)


BUILDERS: dict[str, Callable[..., Any]] = {
    "ceiling": ceiling(True),
    "ceiling_norewrite": ceiling(False),
    "pyarrow_read_table": pyarrow_read_table,
    "pyarrow_iter_batches": pyarrow_iter_batches,
    "tfdata_memory_cache": tfdata_memory_cache,
    "tfdata_save_load": tfdata_save_load,
    "hf": hf_datasets(False),
    "hf_shuffle": hf_datasets(True),
    "gather_permutation": gather_permutation,
    "tfdata_shuffle": tfdata_shuffle,
}
"""Builder name (an arm's ``builder``) -> builder."""
