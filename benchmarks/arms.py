"""The child side of the interleaved benchmark: one persistent process holding several *arms*.

An arm is one configuration under comparison (a loader x a way of consuming it). The parent
(:mod:`benchmarks.interleaved`) starts ``python -m benchmarks.arms PROCESS_JSON``; the child builds
every arm of the process (a dataset, a loader, arrays; cache-filling epochs run here, timed as
``fill_s``), prints ``READY``, then answers commands on stdin, one per line:

    ``pass NAME``: one timed pass of arm NAME -> ``RESULT {"seconds": ..., ...}``
    ``quit``: closes every arm (caches, files, readers) -> ``FINAL {...}`` and exits.

The parent decides the order (A B A B ... within a process, and across processes), so the arms of
one process share the machine's state at the same moments. Protocol lines start with ``PREFIX``;
anything else on stdout (library chatter) goes to the log. Each Deephaven process gets its own JVM
(``-Xmx{heap}`` and the process's ``jvm_args``); with ``gc_log`` it logs GC (``-Xlog:gc``) to that file
and each pass reports the GC pauses logged during it.

Arm kinds (``kind``) and their pass:
    ``reduce``: one ``ds.reduce`` epoch of a dataset built once (cached arms: after a filling epoch),
        counting rows only: a batch no one copied is never touched.
    ``read_reduce``: the same epoch, the step also summing every feature and label (it reads each
        byte, as a training step does): the headline consumer. A builder may return a function giving
        each epoch's dataset (an in-memory permutation drawn per epoch); it runs inside the pass.
    ``fresh_reduce``: a new dataset (new loader, no cache) per pass, one epoch: dh_tf's epoch 1.
    ``epoch1``: a new dataset per pass, its build *and* one ``read_reduce`` epoch timed (a peer's load,
        such as ``read_table``, counts; the JVM start and ``parquet.read`` happened before READY).
    ``engine_read``: one epoch of ``TableLoader(prefetch=0).iter_groups()``, no TensorFlow.
    ``fit``: a new seeded model (and a new dataset, so an empty cache) per pass; ``model.fit(epochs=E)``.
    ``petastorm``: a new ``make_batch_reader`` per pass (``num_epochs=1``: one epoch, the reader's
        start-up inside it; or ``num_epochs=E``: E epochs, the pass's figure is all E of them);
        options ``read`` (sum every byte), ``shuffle`` (row groups and rows shuffled by the reader).

An arm with option ``quality`` runs one more, untimed epoch at build time that maps every delivered
row back to its table position (:mod:`benchmarks.quality`): its shuffle quality goes into ``info``.

Only numpy, pyarrow and the standard library at module level: the petastorm venv runs this too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data import FEATURES, LABEL, ROW_BYTES, load_numpy
from benchmarks.loaders import (
    Case,
    _model,
    _reduce_epoch,
    _tf,
    current_rss_mib,
    dh_tf_dataset,
    dh_tf_tf_cache,
    numpy_range,
    numpy_slices,
    open_deephaven_table,
    peak_rss_mib,
    versions,
)

PREFIX = "INTERLEAVED "
GC_PAUSE = re.compile(r"Pause .*?(\d+(?:\.\d+)?)ms\s*$")
"""A GC pause line of ``-Xlog:gc`` (JDK 17): ``GC(3) Pause Young (Normal) (G1 Evacuation Pause) 100M->20M(1024M) 5.1ms``."""

Pass = Callable[[], dict[str, Any]]


def gc_pauses(text: str) -> tuple[int, float]:
    """(pauses, total pause ms) of the ``-Xlog:gc`` lines in ``text`` (concurrent phases are not pauses)."""
    times = [float(m.group(1)) for line in text.splitlines() if (m := GC_PAUSE.search(line))]
    return len(times), round(sum(times), 3)


def _case(spec: dict[str, Any], process: dict[str, Any]) -> Case:
    return Case(spec["name"], spec["kind"], spec["batch_size"], spec["path"], spec["rows"], 1, process["heap"],
                spec.get("epochs", 1))


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def _dataset(builder: str, options: dict[str, Any], case: Case, table: Any, stack: contextlib.ExitStack) -> Any:
    from benchmarks.peers import BUILDERS

    if builder in BUILDERS:
        return BUILDERS[builder](case, table, stack)
    if builder == "dh_tf":
        opts = dict(options)
        return dh_tf_dataset(opts.pop("shuffle", False), opts.pop("prefetch", 2), **opts)(case, table, stack)
    if builder == "dh_tf_tfcache":
        return dh_tf_tf_cache(case, table, stack)
    if builder == "numpy_range":
        return numpy_range(case, table, stack)
    if builder == "numpy_slices":
        return numpy_slices(case, table, stack)
    raise KeyError(f"unknown builder {builder!r}")


def build_arm(spec: dict[str, Any], process: dict[str, Any], table: Any, stack: contextlib.ExitStack,
              info: dict[str, Any]) -> Pass:
    """Builds one arm; returns its one-pass function. Facts about the build go into ``info``."""
    case, kind, rows = _case(spec, process), spec["kind"], spec["rows"]
    options = spec.get("options", {})
    if kind in ("reduce", "read_reduce"):
        built, read_bytes = _dataset(spec["builder"], options, case, table, stack), kind == "read_reduce"
        epoch: Callable[[], Any] = built if callable(built) else (lambda: built)  # a dataset is not callable
        if spec.get("fill"):  # the epoch that fills the cache: reported apart, never a pass
            info["fill_s"] = round(_timed(lambda: _reduce_epoch(epoch(), case, rows, read_bytes))[0], 4)
        if spec.get("quality"):
            info["quality"] = _quality(epoch(), case)
        return lambda: {"batches": _reduce_epoch(epoch(), case, rows, read_bytes)}
    if kind == "epoch1":
        def first_epoch() -> dict[str, Any]:
            with contextlib.ExitStack() as pass_stack:
                start = time.perf_counter()
                dataset = _dataset(spec["builder"], options, case, table, pass_stack)
                build_s = time.perf_counter() - start
                batches = _reduce_epoch(dataset, case, rows, read_bytes=True)
                seconds = time.perf_counter() - start
            return {"seconds": seconds, "build_s": round(build_s, 4), "batches": batches}
        return first_epoch
    if kind == "fresh_reduce":
        def fresh() -> dict[str, Any]:
            with contextlib.ExitStack() as pass_stack:
                build_s, dataset = _timed(lambda: _dataset(spec["builder"], options, case, table, pass_stack))
                seconds, batches = _timed(lambda: _reduce_epoch(dataset, case, rows))
            return {"seconds": seconds, "build_s": round(build_s, 4), "batches": batches}
        return fresh
    if kind == "engine_read":
        import dh_tf

        loader = dh_tf.TableLoader(table, FEATURES, LABEL, batch_size=1, prefetch=0, **options)
        stack.callback(loader.close)
        info["reader_threads"] = loader.reader_threads

        def read() -> dict[str, Any]:
            got = sum(len(y) for _, y in loader.iter_groups())
            if got != rows:
                raise RuntimeError(f"{spec['name']}: read {got} rows, the table has {rows}")
            return {}
        return read
    if kind == "fit":
        return _fit_arm(spec, case, table, options)
    if kind == "petastorm":
        return _petastorm_arm(spec, case, stack, info)
    raise KeyError(f"unknown arm kind {kind!r}")


def _quality(dataset: Any, case: Case) -> dict[str, Any]:
    """The shuffle quality of one untimed epoch of ``dataset`` (see :mod:`benchmarks.quality`)."""
    from benchmarks.quality import RowIds, measure_quality

    start = time.perf_counter()
    found = measure_quality(((x.numpy(), y) for x, y in dataset), RowIds(case.path), case.num_rows)
    return {**found, "quality_s": round(time.perf_counter() - start, 3)}


def _fit_arm(spec: dict[str, Any], case: Case, table: Any, options: dict[str, Any]) -> Pass:
    """A new seeded model per pass, E epochs of ``model.fit``; a dh_tf dataset is new per pass too."""
    tf = _tf()
    keras = tf.keras
    arrays = load_numpy(Path(case.path)) if spec["builder"] == "numpy" else None

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(round(time.perf_counter() - self.start, 4))

    def one_pass() -> dict[str, Any]:
        model, timer = _model(keras), EpochTimer()
        with contextlib.ExitStack() as pass_stack:
            if arrays is not None:
                x, y = arrays
                seconds, history = _timed(lambda: model.fit(x, y, batch_size=case.batch_size, epochs=case.epochs,
                                                            shuffle=bool(options.get("shuffle")), verbose=0,
                                                            callbacks=[timer]))
            else:
                dataset = _dataset(spec["builder"], options, case, table, pass_stack)
                seconds, history = _timed(lambda: model.fit(dataset, epochs=case.epochs, shuffle=False, verbose=0,
                                                            callbacks=[timer]))
        last = {k: round(float(v[-1]), 4) for k, v in history.history.items()}
        return {"seconds": seconds, "epoch_seconds": timer.seconds, **last}

    return one_pass


def _petastorm_arm(spec: dict[str, Any], case: Case, stack: contextlib.ExitStack, info: dict[str, Any]) -> Pass:
    """Petastorm at its documented best: a new reader per pass, never ``reset()``; optional local-disk cache.

    ``make_petastorm_dataset`` refuses a second iteration and points at the reader's ``num_epochs``
    (petastorm/tf_utils.py), so each pass builds a reader: ``num_epochs=1`` (a new reader per epoch)
    or ``num_epochs=E`` (E epochs through one dataset, the reader's start-up included; the pass's
    figure is E x rows over the whole pass, since the reader reads ahead across epoch boundaries;
    ``epoch_seconds`` splits it where the rows counted cross each boundary). With ``cache``, every
    reader of the arm shares one ``local-disk`` cache directory, filled by an epoch at build time
    (``fill_s``), kept across readers (``cleanup=False``) and removed when the arm closes.
    Row groups are read in file order (``shuffle_row_groups=False``), like dh_tf's unshuffled cache,
    unless ``shuffle``: row groups in a new order per reader, rows shuffled inside each row group where
    the installed petastorm has ``shuffle_rows``, and with ``shuffle_buffer`` rows also through
    ``unbatch().shuffle(shuffle_buffer)`` (petastorm's shuffling queue is a TF1 ``tf_tensors`` option; in
    TF2 ``make_petastorm_dataset`` leaves shuffling rows to tf.data). ``read``: the consumer also sums
    every feature and label. ``quality``: one untimed epoch maps rows to table positions (``info``).
    """
    import inspect

    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    tf = _tf()
    options = spec["options"]
    epochs, rows, read_bytes = int(options.get("num_epochs", 1)), case.num_rows, bool(options.get("read"))
    order: dict[str, Any] = {"shuffle_row_groups": bool(options.get("shuffle"))}
    if options.get("shuffle") and "shuffle_rows" in inspect.signature(make_batch_reader).parameters:
        order["shuffle_rows"] = True
    info["reader_order"] = order
    cache: dict[str, Any] = {}
    if spec["options"].get("cache"):
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_petastorm_cache_"))
        cache = {
            "cache_type": "local-disk",
            "cache_location": directory,
            "cache_size_limit": 4 * rows * ROW_BYTES + 2**30,  # pickled Arrow tables, with room
            "cache_row_size_estimate": ROW_BYTES,
            # petastorm 0.13's LocalDiskCache(cleanup=True) removes the directory when a reader exits:
            # keep it for the next reader (the arm's temporary directory goes when the arm closes).
            "cache_extra_settings": {"cleanup": False},
        }

    @tf.function
    def take_rows(iterator: Any, target: Any) -> Any:
        """Consumes batches until ``target`` rows (graph mode, no Python per batch); returns the rows."""
        total, checksum = tf.constant(0, tf.int64), tf.constant(0.0)
        while total < target:
            batch = next(iterator)
            total += tf.cast(tf.shape(batch[1])[0], tf.int64)
            if read_bytes:  # a Python bool: traced in or out
                checksum += tf.reduce_sum(batch[0]) + tf.cast(tf.reduce_sum(batch[1]), tf.float32)
        return total, checksum

    def batches(reader: Any) -> Any:
        dataset = make_petastorm_dataset(reader).map(
            lambda row: (tf.stack([getattr(row, name) for name in FEATURES], axis=1), getattr(row, LABEL)))
        if options.get("shuffle_buffer"):
            dataset = dataset.unbatch().shuffle(int(options["shuffle_buffer"]), seed=0).batch(case.batch_size)
        else:
            dataset = dataset.rebatch(case.batch_size)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def reader(num_epochs: int) -> Any:
        return make_batch_reader(Path(case.path).resolve().as_uri(), schema_fields=[*FEATURES, LABEL],
                                 num_epochs=num_epochs, **order, **cache)

    def run(num_epochs: int) -> list[float]:
        seconds, start, carried = [], time.perf_counter(), 0
        with reader(num_epochs) as opened:
            iterator = iter(batches(opened))
            for _ in range(num_epochs):
                carried += int(take_rows(iterator, tf.constant(rows - carried, tf.int64))[0]) - rows
                seconds.append(time.perf_counter() - start)
                start = time.perf_counter()
            if carried or next(iterator, None) is not None:
                raise RuntimeError(f"{spec['name']}: delivered a different row count than {num_epochs} x {rows}")
        return seconds

    if cache:
        info["fill_s"] = round(sum(run(1)), 4)
        stack.callback(_report_dir, info, cache["cache_location"])
    if spec.get("quality"):
        with reader(1) as opened:
            info["quality"] = _quality(batches(opened), case)

    def one_pass() -> dict[str, Any]:
        seconds = run(epochs)
        return {"seconds": sum(seconds), "epoch_seconds": [round(s, 4) for s in seconds], "timed_rows": rows * epochs}

    return one_pass


def _report_dir(info: dict[str, Any], directory: str) -> None:
    info["cache_bytes"] = sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())


def _say(kind: str, payload: dict[str, Any]) -> None:
    print(f"{PREFIX}{kind} {json.dumps(payload)}", flush=True)


def serve(process: dict[str, Any]) -> None:
    """Builds the process's arms, then runs passes as the parent asks (see the module docstring)."""
    stack = contextlib.ExitStack()
    arms: dict[str, Pass] = {}
    infos: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    gc_log = process.get("gc_log")
    ready: dict[str, Any] = {"versions": versions(tuple(process.get("packages", ())))}
    try:
        tables: dict[str, Any] = {}
        if process.get("deephaven"):
            jvm_args = (*process.get("jvm_args", ()), *((f"-Xlog:gc:file={gc_log}",) if gc_log else ()))
            first = process["arms"][0]
            tables[first["path"]] = open_deephaven_table(_case(first, process), tuple(jvm_args))
            from dh_tf.reading.loader import default_reader_threads

            ready["default_reader_threads"] = default_reader_threads()
        for spec in process["arms"]:
            info = infos.setdefault(spec["name"], {})
            try:
                table = None
                if process.get("deephaven"):
                    if spec["path"] not in tables:
                        from deephaven import parquet

                        tables[spec["path"]] = parquet.read(spec["path"])
                    table = tables[spec["path"]]
                start = time.perf_counter()
                arms[spec["name"]] = build_arm(spec, process, table, stack, info)
                info["setup_s"] = round(time.perf_counter() - start, 3)
            except Exception as e:  # one arm failing leaves the others running
                traceback.print_exc()
                failed[spec["name"]] = f"{type(e).__name__}: {e}"[:2000]
    except Exception as e:
        traceback.print_exc()
        failed.update({spec["name"]: f"process setup: {type(e).__name__}: {e}"[:2000] for spec in process["arms"]})
    _say("READY", {**ready, "arms": infos, "failed": failed, "rss_mib": round(current_rss_mib(), 1)})
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "pass":
            _say("RESULT", _one_pass(arms, name, gc_log))
        elif command == "quit":
            break
    final: dict[str, Any] = {"peak_rss_mib": round(peak_rss_mib(), 1)}
    try:
        stack.close()
    except Exception as e:
        final["close_error"] = f"{type(e).__name__}: {e}"
    if process.get("deephaven"):
        with contextlib.suppress(Exception):
            from dh_tf.diagnostics import memory_report

            final["jvm_heap_peak_mib"] = round(memory_report().heap_peak_mib, 1)
    _say("FINAL", {**final, "arms": infos})


def _one_pass(arms: dict[str, Pass], name: str, gc_log: str | None) -> dict[str, Any]:
    """Runs one pass of arm ``name``; its time, facts, and the GC pauses logged meanwhile."""
    offset = os.path.getsize(gc_log) if gc_log and os.path.exists(gc_log) else 0
    try:
        seconds, facts = _timed(arms[name])
        result = {"seconds": seconds, **facts}  # an arm may time only part of its pass
        result["seconds"] = round(result["seconds"], 4)
    except Exception as e:
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"[:2000]}
    if gc_log and os.path.exists(gc_log):
        with open(gc_log) as f:
            f.seek(offset)
            result["gc_pauses"], result["gc_pause_ms"] = gc_pauses(f.read())
    print(f"{name}: {result}", file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: JVM and TF threads can hang it
