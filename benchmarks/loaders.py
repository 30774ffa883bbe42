"""Every loader and consumer of the benchmark; each case runs in a child process of its own.

A *case* is one loader x one consumer x one batch size on one Parquet file. The parent calls
:func:`run_case`, which starts ``python -m benchmarks.loaders CASE_JSON`` (its own process, so peak
RSS is per loader and each Deephaven loader gets its own JVM and heap) and reads back the one line the
child prints after ``RESULT_PREFIX``. The child (:func:`main`) builds the loader, runs ``repeats``
passes of the consumer and times each.

Consumers:
    ``reduce``: ``ds.reduce`` adds up the rows of every batch in graph mode (no Python per batch on
        the consumer side: it measures the loader), then checks the total against the table.
    ``fit``: one Keras ``fit`` epoch of a small model (Dense 32 relu -> Dense 1 sigmoid) per pass.
    ``read``: the limits: one plain read of the data per pass, no TensorFlow.
    ``epochs``: multi-epoch: each pass builds a *new* dataset (a new loader, so a new epoch cache)
        and runs ``case.epochs`` ``ds.reduce`` epochs over it, timing each epoch.
    ``fit_epochs``: multi-epoch Keras: each pass builds a new dataset and a new (seeded) model and
        runs ``model.fit(ds, epochs=case.epochs)``, timing each epoch with a callback.

Only numpy, pyarrow and the standard library are imported at module level: the parent imports this
module, and the petastorm venv (numpy<2, pyarrow<15, no Deephaven) runs it as a child.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks.data import FEATURES, LABEL, ROW_BYTES, arrow_to_numpy, load_numpy

RESULT_PREFIX = "BENCH_RESULT "
REPO = Path(__file__).resolve().parents[1]
BLOG_CACHE_ROWS = 1_000_000
"""Rows the 2022 blog generator caches per ``to_numpy`` call (not a multiple of common batch sizes)."""


@dataclass(frozen=True)
class Case:
    """One measurement, as sent to the child process (JSON)."""

    loader: str
    consumer: str
    batch_size: int | None
    path: str
    num_rows: int
    repeats: int
    heap: str
    epochs: int = 1
    """Epochs per pass of the multi-epoch consumers (``epochs``, ``fit_epochs``); 1 otherwise."""


@dataclass(frozen=True)
class Loader:
    """A loader under test.

    ``build(case, table, stack)`` returns what the consumer takes: a re-iterable ``tf.data.Dataset``
    (kind ``dataset``; kind ``epochs`` is a dataset for the multi-epoch consumers), ``(x, y, shuffle)``
    arrays for Keras (kind ``arrays``; ``epochs_arrays`` for multi-epoch Keras), or a zero-argument
    function doing one pass and returning the rows it read (kind ``limit``). ``table`` is the
    Deephaven table of the Parquet file when ``deephaven``, else None; ``stack`` an ExitStack for
    clean-up at the end of the case.
    """

    name: str
    description: str
    build: Callable[[Case, Any, contextlib.ExitStack], Any]
    kind: str = "dataset"
    deephaven: bool = False
    fit: bool = False
    venv: str = "main"
    min_batch_size: int = 1
    packages: tuple[str, ...] = ()
    note: str = ""
    jvm_args: tuple[str, ...] = ()
    """Extra JVM flags for the embedded server (Deephaven loaders)."""
    file: str = "pyarrow"
    """Which copy of the data: ``pyarrow`` (as generated) or ``deephaven`` (rewritten by Deephaven)."""
    where: str | None = None
    """A DQL filter applied to the table before ``build`` (its time is ``where_s``, outside the passes)."""
    tags: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Loaders (child side)


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _signature(tf: Any) -> Any:
    return (tf.TensorSpec((None, len(FEATURES)), tf.float32), tf.TensorSpec((None,), tf.int32))


def _generator_dataset(batches: Callable[[], Iterator[Any]]) -> Any:
    """``from_generator`` over a generator *factory* (re-iterable), with an explicit signature."""
    tf = _tf()
    return tf.data.Dataset.from_generator(batches, output_signature=_signature(tf)).prefetch(tf.data.AUTOTUNE)


def _slices(x: Any, y: Any, batch_size: int) -> Iterator[Any]:
    """Batch views of an in-memory block; the last one is short unless the block divides evenly."""
    for start in range(0, len(y), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def dh_tf_dataset(shuffle: bool, prefetch: int, **options: Any) -> Callable[..., Any]:
    """dh_tf.to_dataset on the Parquet-backed table, seed 0, default page size, more ``options``.

    The loader (``ds.dh_tf_loader``) is closed when ``stack`` closes: its epoch cache goes with it.
    """

    def build(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
        import dh_tf

        dataset = dh_tf.to_dataset(
            table, FEATURES, LABEL, batch_size=case.batch_size, shuffle=shuffle, seed=0, prefetch=prefetch, **options
        )
        stack.callback(dataset.dh_tf_loader.close)
        return dataset

    return build


def dh_tf_tf_cache(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """dh_tf.to_dataset (no shuffle, prefetch 2) then ``Dataset.cache(filename)`` in a temporary directory."""
    import tempfile

    tf = _tf()
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_tfcache_"))
    stack.callback(_report_size, case.loader, directory)
    dataset = dh_tf_dataset(False, 2)(case, table, stack)
    return dataset.cache(os.path.join(directory, "cache")).prefetch(tf.data.AUTOTUNE)


def _report_size(loader: str, directory: str) -> None:
    """Prints (to the case's log) how many bytes a cache directory holds: shows the cache was used."""
    size = sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
    print(f"{loader}: cache directory {directory} holds {size:,} bytes", file=sys.stderr, flush=True)


def numpy_slices(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """In memory: ``from_tensor_slices((x, y)).batch(b)``."""
    tf = _tf()
    x, y = load_numpy(Path(case.path))
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(case.batch_size).prefetch(tf.data.AUTOTUNE)


def numpy_range(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """In memory: batch slices of constant tensors mapped over ``Dataset.range`` (the old range-sliced arm, kept as a row).

    Not the ceiling: the constants are captured by the map function, so each new iterator pays tf.data's graph
    rewrites serializing them; :func:`benchmarks.peers.ceiling` is the ceiling.
    """
    tf = _tf()
    x, y = load_numpy(Path(case.path))
    xt, yt, b = tf.constant(x), tf.constant(y), case.batch_size
    del x, y
    batches = tf.data.Dataset.range(math.ceil(case.num_rows / b))
    return batches.map(lambda i: (xt[i * b : (i + 1) * b], yt[i * b : (i + 1) * b])).prefetch(tf.data.AUTOTUNE)


def numpy_fit(shuffle: bool) -> Callable[..., Any]:
    """In memory, for Keras only: ``model.fit(x, y, batch_size=b, shuffle=shuffle)``."""

    def build(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
        x, y = load_numpy(Path(case.path))
        return x, y, shuffle

    return build


def blog_2022(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """The 2022 Deephaven blog generator: cache 1M rows with ``to_numpy(table.slice(a, b))``, yield slices."""
    from deephaven.execution_context import get_exec_ctx
    from deephaven.numpy import to_numpy

    exec_ctx, num_rows = get_exec_ctx(), int(table.size)

    def batches() -> Iterator[Any]:
        for start in range(0, num_rows, BLOG_CACHE_ROWS):
            with exec_ctx:  # the generator runs on a tf.data thread; see docs/design.md section 2, "Threads need the ExecutionContext"
                piece = table.slice(start, min(start + BLOG_CACHE_ROWS, num_rows))
                x, y = to_numpy(piece, FEATURES), to_numpy(piece, [LABEL]).reshape(-1)
            yield from _slices(x, y, case.batch_size)

    return _generator_dataset(batches)


def pyarrow_iter_batches(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """``ParquetFile.iter_batches(batch_size=b)`` -> numpy -> ``from_generator``."""

    def batches() -> Iterator[Any]:
        with pq.ParquetFile(case.path) as file:
            for batch in file.iter_batches(batch_size=case.batch_size, columns=[*FEATURES, LABEL]):
                yield arrow_to_numpy(batch)

    return _generator_dataset(batches)


def dask_partitions(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """``dask.dataframe.read_parquet``: compute one partition at a time, yield its batch slices."""
    import dask.dataframe as dd

    frame = dd.read_parquet(case.path, columns=[*FEATURES, LABEL])

    def batches() -> Iterator[Any]:
        for part in frame.to_delayed():
            pdf = part.compute()
            x = np.ascontiguousarray(pdf[FEATURES].to_numpy(np.float32))
            yield from _slices(x, pdf[LABEL].to_numpy(np.int32), case.batch_size)

    return _generator_dataset(batches)


def ray_data(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """``ray.data.read_parquet(...).iter_tf_batches(batch_size=b)`` -> ``from_generator``."""
    import ray

    tf = _tf()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    stack.callback(ray.shutdown)
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.read_parquet(case.path, columns=[*FEATURES, LABEL])

    def batches() -> Iterator[Any]:
        for batch in dataset.iter_tf_batches(batch_size=case.batch_size):
            yield tf.stack([batch[name] for name in FEATURES], axis=1), batch[LABEL]

    return _generator_dataset(batches)


def petastorm_reader(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """Petastorm ``make_batch_reader`` + ``make_petastorm_dataset``, stacked and ``rebatch``-ed to b rows."""
    import warnings

    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    tf = _tf()
    warnings.filterwarnings("ignore")  # pyarrow's legacy-dataset deprecation warnings, once per piece
    reader = stack.enter_context(
        make_batch_reader(Path(case.path).resolve().as_uri(), schema_fields=[*FEATURES, LABEL], num_epochs=1)
    )
    # Re-iterating the dataset resets the reader (one epoch per pass).
    rows = make_petastorm_dataset(reader).map(
        lambda row: (tf.stack([getattr(row, name) for name in FEATURES], axis=1), getattr(row, LABEL))
    )
    return rows.rebatch(case.batch_size).prefetch(tf.data.AUTOTUNE)


def limit_engine_read(reader_threads: int | None = None) -> Callable[..., Callable[[], int]]:
    """dh_tf's page reader alone: ``TableLoader(prefetch=0).iter_groups()`` (batch 1: groups are pages)."""

    def build(case: Case, table: Any, stack: contextlib.ExitStack) -> Callable[[], int]:
        import dh_tf

        loader = dh_tf.TableLoader(table, FEATURES, LABEL, batch_size=1, prefetch=0, reader_threads=reader_threads)
        return lambda: sum(len(y) for _, y in loader.iter_groups())

    return build


def petastorm_reader_cached(case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    """Petastorm ``make_batch_reader`` with its local-disk cache (in a temporary directory), as above."""
    import tempfile
    import warnings

    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    tf = _tf()
    warnings.filterwarnings("ignore")
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_petastorm_cache_"))
    reader = stack.enter_context(
        make_batch_reader(
            Path(case.path).resolve().as_uri(),
            schema_fields=[*FEATURES, LABEL],
            num_epochs=1,
            cache_type="local-disk",
            cache_location=directory,
            cache_size_limit=4 * case.num_rows * ROW_BYTES + 2**30,  # pickled Arrow tables, with room
            cache_row_size_estimate=ROW_BYTES,
        )
    )
    stack.callback(_report_size, case.loader, directory)  # runs before the reader cleans its cache up
    rows = make_petastorm_dataset(reader).map(
        lambda row: (tf.stack([getattr(row, name) for name in FEATURES], axis=1), getattr(row, LABEL))
    )
    return rows.rebatch(case.batch_size).prefetch(tf.data.AUTOTUNE)


def limit_pyarrow_read_table(case: Case, table: Any, stack: contextlib.ExitStack) -> Callable[[], int]:
    """``pyarrow.parquet.read_table``: decode the whole file to Arrow (all cores), nothing else."""
    return lambda: pq.read_table(case.path, columns=[*FEATURES, LABEL]).num_rows


def limit_memcpy(case: Case, table: Any, stack: contextlib.ExitStack) -> Callable[[], int]:
    """``np.copyto`` of the table's decoded bytes (rows x 68 B) between two touched buffers."""
    source = np.ones(case.num_rows * ROW_BYTES, dtype=np.uint8)
    target = np.zeros_like(source)

    def one_pass() -> int:
        np.copyto(target, source)
        return case.num_rows

    return one_pass


def _registry(*loaders: Loader) -> dict[str, Loader]:
    return {loader.name: loader for loader in loaders}


_DH = {"deephaven": True, "packages": ("deephaven-core",)}
SOFTREF_FLAG = "-XX:SoftRefLRUPolicyMSPerMB=0"
"""The JVM flag of docs/design.md section 4: the GC drops softly-reachable decoded pages at once.

``dh_tf.server.start_server`` sets it by default since the second wave, so every Deephaven case has
it; the ``*_softref_off`` cases put the JVM's own default (1000) back to measure it without."""
SOFTREF_OFF = "-XX:SoftRefLRUPolicyMSPerMB=1000"
SHUFFLE_BLOCKS = {"64k": 65536, "256k": 262144, "1m": 1048576}
FILTERS = {"1_3": "F0 < -0.43073", "1_100": "F0 < -2.32635"}
"""DQL filters keeping ~1/3 and ~1/100 of the rows: F0 is standard normal (its 1/3 and 1/100 quantiles)."""
LOADERS = _registry(
    Loader("dh_tf_p0", "dh_tf.to_dataset, shuffle off, prefetch 0", dh_tf_dataset(False, 0), fit=True, **_DH),
    Loader(
        "dh_tf_p2",
        "dh_tf.to_dataset, shuffle off, prefetch 2",
        dh_tf_dataset(False, 2),
        fit=True,
        tags=("targets", "shuffle", "jvm", "filter"),
        **_DH,
    ),
    Loader("dh_tf_shuffle_p0", "dh_tf.to_dataset, shuffle on, prefetch 0", dh_tf_dataset(True, 0), fit=True, **_DH),
    Loader("dh_tf_shuffle_p2", "dh_tf.to_dataset, shuffle on, prefetch 2", dh_tf_dataset(True, 2), fit=True, **_DH),
    *[
        Loader(
            f"dh_tf_shuffle_b{label}",
            f"dh_tf.to_dataset, shuffle on, shuffle_block_rows {block:,}, prefetch 2",
            dh_tf_dataset(True, 2, shuffle_block_rows=block),
            min_batch_size=1024,
            tags=("shuffle", "targets"),
            **_DH,
        )
        for label, block in SHUFFLE_BLOCKS.items()
    ],
    Loader(
        "dh_tf_softref0",
        f"dh_tf.to_dataset, prefetch 2, JVM {SOFTREF_FLAG}",
        dh_tf_dataset(False, 2),
        min_batch_size=1024,
        jvm_args=(SOFTREF_FLAG,),
        tags=("jvm",),
        **_DH,
    ),
    Loader(
        "dh_tf_dhfile",
        "dh_tf.to_dataset, prefetch 2, on the Deephaven-written copy of the file",
        dh_tf_dataset(False, 2),
        min_batch_size=1024,
        file="deephaven",
        tags=("jvm",),
        **_DH,
    ),
    Loader(
        "dh_tf_softref_off",
        f"dh_tf.to_dataset, prefetch 2, JVM {SOFTREF_OFF} (the JVM default; dh_tf sets 0)",
        dh_tf_dataset(False, 2),
        min_batch_size=1024,
        jvm_args=(SOFTREF_OFF,),
        tags=("jvm",),
        **_DH,
    ),
    Loader(
        "dh_tf_dhfile_softref_off",
        f"dh_tf.to_dataset, prefetch 2, Deephaven-written file, JVM {SOFTREF_OFF} (the JVM default)",
        dh_tf_dataset(False, 2),
        min_batch_size=1024,
        file="deephaven",
        jvm_args=(SOFTREF_OFF,),
        tags=("jvm",),
        **_DH,
    ),
    Loader(
        "dh_tf_dhfile_softref0",
        f"dh_tf.to_dataset, prefetch 2, Deephaven-written file, JVM {SOFTREF_FLAG}",
        dh_tf_dataset(False, 2),
        min_batch_size=1024,
        file="deephaven",
        jvm_args=(SOFTREF_FLAG,),
        tags=("jvm",),
        **_DH,
    ),
    *[
        Loader(
            f"dh_tf_where_{label}",
            f'dh_tf.to_dataset, prefetch 2, of t.where("{where}") (keeps ~{label.replace("_", "/")})',
            dh_tf_dataset(False, 2),
            min_batch_size=1024,
            where=where,
            tags=("filter",),
            **_DH,
        )
        for label, where in FILTERS.items()
    ],
    Loader("numpy_slices", "in memory: from_tensor_slices((x, y)).batch(b)", numpy_slices, tags=("targets",)),
    Loader(
        "numpy_range",
        "in memory: slices of tensors mapped over a range (the old range-sliced arm; the ceiling is peers.ceiling)",
        numpy_range,
        tags=("targets",),
    ),
    Loader(
        "blog_2022",
        "2022 Deephaven blog generator (to_numpy of 1M-row slices)",
        blog_2022,
        note="short batches at every 1M-row cache boundary",
        **_DH,
    ),
    Loader("pyarrow_iter_batches", "pyarrow ParquetFile.iter_batches + from_generator", pyarrow_iter_batches),
    Loader(
        "dask",
        "dask.dataframe.read_parquet partitions + from_generator",
        dask_partitions,
        packages=("dask", "pandas"),
        note="short batches at partition boundaries",
    ),
    Loader(
        "ray_data",
        "Ray Data read_parquet + iter_tf_batches + from_generator",
        ray_data,
        min_batch_size=1024,
        packages=("ray",),
        note="RSS of the driver only (Ray workers are other processes)",
    ),
    Loader(
        "petastorm",
        "Petastorm make_batch_reader + make_petastorm_dataset + rebatch",
        petastorm_reader,
        venv="petastorm",
        packages=("petastorm",),
        note="own venv (pyarrow<15, numpy<2); reader threads in-process",
        tags=("targets",),
    ),
    Loader("numpy_fit", "in memory: model.fit(x, y, batch_size=b, shuffle=False)", numpy_fit(False), kind="arrays"),
    Loader(
        "numpy_fit_shuffle", "in memory: model.fit(x, y, batch_size=b, shuffle=True)", numpy_fit(True), kind="arrays"
    ),
    Loader(
        "limit_engine_read", "limit: dh_tf page reader, no TF (prefetch 0)", limit_engine_read(), kind="limit", **_DH
    ),
    Loader("limit_pyarrow_read_table", "limit: pyarrow read_table decode", limit_pyarrow_read_table, kind="limit"),
    Loader("limit_memcpy", "limit: numpy memcpy of the same bytes", limit_memcpy, kind="limit"),
    *[
        Loader(
            f"limit_engine_read_t{n}",
            f"limit: dh_tf page reader, no TF (prefetch 0), reader_threads {n}",
            limit_engine_read(n),
            kind="limit",
            tags=("threads", "targets"),
            **_DH,
        )
        for n in (1, 2)
    ],
    # Multi-epoch cases (consumers ``epochs`` and, with fit=True, ``fit_epochs``): a new loader per pass.
    *[
        Loader(
            f"ep_dh_tf{'_cache' if cache else ''}{f'_t{n}' if n else ''}",
            f"dh_tf.to_dataset, prefetch 2, reader_threads {n or 'default'}{', cache=True' if cache else ''}",
            dh_tf_dataset(False, 2, reader_threads=n or None, cache=cache),
            kind="epochs",
            fit=not n,
            min_batch_size=1024,
            tags=("epochs", "threads", "targets"),
            **_DH,
        )
        for cache in (False, True)
        for n in (1, 2, 0)
    ],
    Loader(
        "ep_dh_tf_cache_shuffle",
        "dh_tf.to_dataset, prefetch 2, shuffle on, cache=True",
        dh_tf_dataset(True, 2, cache=True),
        kind="epochs",
        min_batch_size=1024,
        tags=("epochs", "shuffle", "targets"),
        **_DH,
    ),
    Loader(
        "ep_dh_tf_tfcache",
        "dh_tf.to_dataset, prefetch 2, then tf.data Dataset.cache(filename)",
        dh_tf_tf_cache,
        kind="epochs",
        fit=True,
        min_batch_size=1024,
        tags=("epochs",),
        **_DH,
    ),
    Loader(
        "ep_petastorm_cache",
        "Petastorm make_batch_reader(cache_type='local-disk') + make_petastorm_dataset + rebatch",
        petastorm_reader_cached,
        kind="epochs",
        fit=True,
        venv="petastorm",
        min_batch_size=1024,
        packages=("petastorm",),
        note="own venv; its local-disk cache (diskcache) holds decoded row groups",
        tags=("epochs", "targets"),
    ),
    Loader(
        "ep_numpy_fit",
        "in memory: model.fit(x, y, batch_size=b, epochs=N, shuffle=False)",
        numpy_fit(False),
        kind="epochs_arrays",
        min_batch_size=1024,
        tags=("epochs", "targets"),
    ),
)
"""Every loader by name. New cases sit next to the old ones; ``tags`` name groups for ``--only @tag``."""


# ---------------------------------------------------------------------------------------------
# Consumers (child side): each returns a function doing one pass and returning facts about it.


def _reduce_epoch(dataset: Any, case: Case, expected_rows: int, read_bytes: bool = False) -> int:
    """One graph-mode ``ds.reduce`` over the dataset; checks the row total; returns the batches.

    ``read_bytes``: the step also sums every feature and label (a consumer that reads each byte, as a
    training step does); otherwise it only counts rows, and a batch no one copied is never touched.
    """
    tf = _tf()
    zero = tf.constant(0, tf.int64)

    def step(state: Any, batch: Any) -> Any:
        total = state[2]
        if read_bytes:
            total += tf.reduce_sum(batch[0]) + tf.cast(tf.reduce_sum(batch[1]), tf.float32)
        return state[0] + tf.cast(tf.shape(batch[0])[0], tf.int64), state[1] + 1, total

    rows, batches, _ = (t.numpy() for t in dataset.reduce((zero, zero, tf.constant(0.0)), step))
    rows, batches = int(rows), int(batches)
    if rows != expected_rows:
        raise RuntimeError(f"{case.loader}: delivered {rows} rows, the table has {expected_rows}")
    return batches


def reduce_pass(dataset: Any, case: Case, expected_rows: int) -> Callable[[], dict[str, Any]]:
    """One graph-mode pass: ``ds.reduce`` adds up rows and batches; checks the row total."""
    return lambda: {"batches": _reduce_epoch(dataset, case, expected_rows)}


def _model(keras: Any) -> Any:
    """The benchmark model (Dense 32 relu -> Dense 1 sigmoid, Adam), seeded."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((len(FEATURES),)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def fit_pass(built: Any, case: Case, expected_rows: int) -> Callable[[], dict[str, Any]]:
    """One Keras epoch per pass, of one model built here (seeded) and kept across passes."""
    model = _model(_tf().keras)

    def one_pass() -> dict[str, Any]:
        if isinstance(built, tuple):
            x, y, shuffle = built
            history = model.fit(x, y, batch_size=case.batch_size, epochs=1, shuffle=shuffle, verbose=0)
        else:
            history = model.fit(built, epochs=1, shuffle=False, verbose=0)  # shuffling is the loader's job
        return {name: round(float(values[-1]), 4) for name, values in history.history.items()}

    return one_pass


def read_pass(one_read: Callable[[], int], case: Case, expected_rows: int) -> Callable[[], dict[str, Any]]:
    """One plain read (a limit); checks the row count."""

    def one_pass() -> dict[str, Any]:
        rows = one_read()
        if rows != expected_rows:
            raise RuntimeError(f"{case.loader}: read {rows} rows, the table has {expected_rows}")
        return {}

    return one_pass


CONSUMERS = {"reduce": reduce_pass, "fit": fit_pass, "read": read_pass}

Build = Callable[[contextlib.ExitStack], Any]
"""Builds a new dataset (or arrays) whose resources close with the given stack."""


def epochs_pass(build: Build, case: Case, expected_rows: int) -> Callable[[], dict[str, Any]]:
    """A new dataset per pass, ``case.epochs`` timed ``ds.reduce`` epochs over it (epoch 1 fills caches)."""

    def one_pass() -> dict[str, Any]:
        seconds, batches = [], 0
        with contextlib.ExitStack() as stack:
            dataset = build(stack)
            for epoch in range(case.epochs):
                start = time.perf_counter()
                batches = _reduce_epoch(dataset, case, expected_rows)
                seconds.append(time.perf_counter() - start)
                print(f"{case.loader}: epoch {epoch + 1}: {seconds[-1]:.3f} s", file=sys.stderr, flush=True)
        return {"batches": batches, "epoch_seconds": [round(s, 4) for s in seconds]}

    return one_pass


def fit_epochs_pass(build: Build, case: Case, expected_rows: int) -> Callable[[], dict[str, Any]]:
    """A new dataset and a new seeded model per pass; ``model.fit(..., epochs=case.epochs)``, each epoch timed."""
    keras = _tf().keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)
            print(f"{case.loader}: fit epoch {epoch + 1}: {self.seconds[-1]:.3f} s", file=sys.stderr, flush=True)

    def one_pass() -> dict[str, Any]:
        model, timer = _model(keras), EpochTimer()
        with contextlib.ExitStack() as stack:
            built = build(stack)
            if isinstance(built, tuple):
                x, y, shuffle = built
                history = model.fit(
                    x, y, batch_size=case.batch_size, epochs=case.epochs, shuffle=shuffle, verbose=0, callbacks=[timer]
                )
            else:
                history = model.fit(built, epochs=case.epochs, shuffle=False, verbose=0, callbacks=[timer])
        last = {name: round(float(values[-1]), 4) for name, values in history.history.items()}
        return {**last, "epoch_seconds": [round(s, 4) for s in timer.seconds]}

    return one_pass


MULTI_EPOCH_CONSUMERS = {"epochs": epochs_pass, "fit_epochs": fit_epochs_pass}


# ---------------------------------------------------------------------------------------------
# The child process


def current_rss_mib() -> float:
    """This process's resident set size now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak RSS so far (Python + embedded JVM), in MiB (``ru_maxrss`` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_deephaven_table(case: Case, jvm_args: tuple[str, ...] = ()) -> Any:
    """Starts the embedded server (``-Xmx{heap}``, ``jvm_args``) on a free loopback port; reads the Parquet file."""
    from dh_tf.server import start_server

    start_server(heap=case.heap, port=_free_port(), jvm_args=jvm_args)
    from deephaven import parquet

    return parquet.read(case.path)


def versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the packages a case used."""
    found = {}
    for name in ("numpy", "pyarrow", "tensorflow-cpu", *names):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def measure(case: Case) -> dict[str, Any]:
    """Builds the loader, runs ``case.repeats`` timed passes, returns rates and memory figures."""
    loader = LOADERS[case.loader]
    result: dict[str, Any] = {"versions": versions(loader.packages)}
    with contextlib.ExitStack() as stack:
        table = open_deephaven_table(case, loader.jvm_args) if loader.deephaven else None
        expected_rows = case.num_rows
        if loader.where:
            start = time.perf_counter()
            table = table.where(loader.where)
            expected_rows = int(table.size)
            result.update(where=loader.where, where_s=round(time.perf_counter() - start, 3))
        result["delivered_rows"] = expected_rows
        start = time.perf_counter()
        if case.consumer in MULTI_EPOCH_CONSUMERS:
            one_pass = MULTI_EPOCH_CONSUMERS[case.consumer](
                lambda pass_stack: loader.build(case, table, pass_stack), case, expected_rows
            )
        else:
            one_pass = CONSUMERS[case.consumer](loader.build(case, table, stack), case, expected_rows)
        result["setup_s"] = round(time.perf_counter() - start, 3)
        result["rss_before_passes_mib"] = round(current_rss_mib(), 1)
        if loader.deephaven:
            from dh_tf.diagnostics import reset_heap_peak

            reset_heap_peak()
        seconds, passes = [], []
        for index in range(case.repeats):
            start = time.perf_counter()
            passes.append(one_pass())
            seconds.append(time.perf_counter() - start)
            print(f"{case.loader}: pass {index + 1}: {seconds[-1]:.3f} s", file=sys.stderr, flush=True)
        result.update(
            seconds=[round(s, 4) for s in seconds],
            rows_per_s=case.num_rows * case.epochs / statistics.median(seconds),
            first_pass_rows_per_s=case.num_rows * case.epochs / seconds[0],
            delivered_rows_per_s=expected_rows * case.epochs / statistics.median(seconds),
            last_pass=passes[-1],
            peak_rss_mib=round(peak_rss_mib(), 1),
        )
        if case.consumer in MULTI_EPOCH_CONSUMERS:
            result.update(epoch_rates(case.num_rows, [p.pop("epoch_seconds") for p in passes]))
        if loader.deephaven:
            from dh_tf.diagnostics import memory_report

            report = memory_report()
            result.update(
                jvm_heap_peak_mib=round(report.heap_peak_mib, 1), jvm_heap_max_mib=round(report.heap_max_mib, 1)
            )
    return result


def epoch_rates(num_rows: int, epoch_seconds: list[list[float]]) -> dict[str, Any]:
    """Per-epoch figures of a multi-epoch case from its passes' epoch times (one list per pass).

    ``epoch1_rows_per_s``: rows / median over passes of epoch 1 (the one that fills caches);
    ``later_rows_per_s``: rows / median of every later epoch of every pass; ``per_epoch_rows_per_s``:
    for each epoch index, rows / median over passes; ``fit_seconds``: median over passes of the sum of
    the epoch times (without building the loader or loading arrays).
    """
    later = [s for seconds in epoch_seconds for s in seconds[1:]]
    return {
        "epoch_seconds": epoch_seconds,
        "epoch1_rows_per_s": num_rows / statistics.median(seconds[0] for seconds in epoch_seconds),
        "later_rows_per_s": num_rows / statistics.median(later) if later else None,
        "per_epoch_rows_per_s": [num_rows / statistics.median(column) for column in zip(*epoch_seconds)],
        "fit_seconds": statistics.median(sum(seconds) for seconds in epoch_seconds),
    }


def main(argv: list[str]) -> None:
    """Child entry point: runs the case given as JSON, prints ``RESULT_PREFIX`` + one JSON line.

    Never raises: a failure is reported in the JSON (``status`` and ``error``); a missing package
    (ImportError) reads ``not available``.
    """
    case = Case(**json.loads(argv[0]))
    try:
        result = {"status": "ok", **measure(case)}
    except ImportError as e:
        result = {"status": "not available", "error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # any failure is a result, not a crash of the benchmark
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: JVM and TF threads can hang or crash it after the result


# ---------------------------------------------------------------------------------------------
# The parent side


@dataclass
class Outcome:
    """A case and what came back from its child (or why nothing did)."""

    case: Case
    result: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The case's fields and the result's, flat, for JSON and the report."""
        return {**asdict(self.case), **self.result}


def run_case(case: Case, python: str, log_path: Path, timeout_s: float) -> Outcome:
    """Runs one case in a child process (killed with its descendants on timeout); never raises.

    The child's stdout and stderr go to ``log_path``; the result is its ``RESULT_PREFIX`` line.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}  # -m in REPO finds benchmarks
    start = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            [python, "-m", "benchmarks.loaders", json.dumps(asdict(case))],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            stdout, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(child.pid)
            child.communicate()
            return Outcome(case, {"status": "failed", "error": f"timed out after {timeout_s:.0f} s"})
        log.write(stdout)
    wall_s = round(time.perf_counter() - start, 1)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return Outcome(case, {**json.loads(line[len(RESULT_PREFIX) :]), "wall_s": wall_s})
    tail = log_path.read_text()[-1500:]
    return Outcome(case, {"status": "failed", "error": f"exit code {child.returncode}, no result; log tail: {tail}"})


def _kill_tree(pid: int) -> None:
    """Kills a child and all its descendants (Ray's workers run in process groups of their own)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for process in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
