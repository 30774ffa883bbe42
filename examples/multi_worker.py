"""Multi-worker training with tf.distribute: each worker reads only its own shard of one Deephaven table.

Run ``python examples/multi_worker.py``: it starts two worker processes on this machine, each this
same script with a ``TF_CONFIG`` naming both, waits for them (killing both if one fails or the
time runs out), and checks what they report. On real machines, start one worker per machine
yourself, with the same ``TF_CONFIG`` cluster and its own ``task.index``.

The recipe, in each worker (see :func:`train`):

1. ``tf.distribute.MultiWorkerMirroredStrategy()``, created first, before any other TensorFlow op.
2. ``strategy.distribute_datasets_from_function(lambda ctx: dh_tf.to_dataset(table, ...,
   batch_size=GLOBAL_BATCH, shuffle=True, seed=SEED, input_context=ctx))``: dh_tf reads shard
   ``ctx.input_pipeline_id`` of ``ctx.num_input_pipelines`` (disjoint, equal-sized, the same number
   of batches on every worker, as synchronous training needs) with the per-replica batch size.
   Every worker must pass the same ``seed``: all compute the same shuffled order and each takes its
   own part. Up to ``num_workers - 1`` rows of an epoch are left out (NOTE [ Shards ] in dh_tf/plan.py).
3. A training step run with ``strategy.run``: gradients are summed across workers, so every worker
   ends with the same weights.

Keras 3's ``model.fit`` fails with MultiWorkerMirroredStrategy (an upstream bug,
keras-team/keras#20585: its first-batch build reduces the ``(x, y)`` tuple, which the strategy
cannot), so the workers train with a small custom loop, as TensorFlow's own multi-worker guide does.

Where the table comes from:

- a Deephaven server over pydeephaven when ``DH_HOST`` is set: table ``DH_TABLE`` on
  ``DH_HOST:DH_PORT`` with the pre-shared key ``DH_PSK`` (anonymous when unset). The workers need
  no JVM: ``pip install 'dh-tf[remote]' tensorflow``.
- otherwise, each worker starts its own embedded server (``pip install 'dh-tf[server]'``) over
  the same Parquet file, which the launcher writes once with pyarrow.

Both filter the table with DQL (``FILTER``). Environment variables: DH_TF_EXAMPLE_ROWS (rows of the
generated Parquet file, default 200,000), DH_TF_EXAMPLE_DIR (the Parquet file and what each worker
reports; default ~/.cache/dh_tf/multi_worker), DH_TF_EXAMPLE_TIMEOUT (seconds for the whole run,
default 600), DH_TF_EXAMPLE_EPOCHS (default 2), DH_TF_EXAMPLE_HEAP (each worker's embedded server,
default 512m).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FEATURES = [f"X{n}" for n in range(8)]
FILTER = "Id % 10 != 0"  # DQL, applied by every worker to the same table
GLOBAL_BATCH = 64  # split between the replicas of all workers
SEED = 7  # the same on every worker: one global shuffled order per epoch
NUM_WORKERS = 2
SUCCESS = "dh_tf example OK:"


def example_dir() -> Path:
    default = Path.home() / ".cache" / "dh_tf" / "multi_worker"
    return Path(os.environ.get("DH_TF_EXAMPLE_DIR") or default)


def write_parquet(path: Path, num_rows: int) -> None:
    """The demo data: ``Id`` (long), ``X0..X7`` (double) and a learnable ``Label`` (int, 0/1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(num_rows, len(FEATURES)))
    label = (x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + 0.25 * x[:, 4] > 0).astype(np.int32)
    columns = {"Id": np.arange(num_rows, dtype=np.int64), **{name: x[:, n] for n, name in enumerate(FEATURES)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    shadow = path.with_name(f".{path.name}.{os.getpid()}")
    pq.write_table(pa.table({**columns, "Label": label}), shadow)
    shadow.replace(path)  # readers never see half a file


def open_table() -> tuple[object, object | None]:
    """The table this worker trains on, filtered with DQL, and the pydeephaven session if remote."""
    if os.environ.get("DH_HOST"):
        from pydeephaven import Session

        psk = os.environ.get("DH_PSK")
        auth = (
            {"auth_type": "io.deephaven.authentication.psk.PskAuthenticationHandler", "auth_token": psk}
            if psk
            else {"auth_type": "Anonymous"}
        )
        session = Session(host=os.environ["DH_HOST"], port=int(os.environ.get("DH_PORT", "10000")), **auth)
        return session.open_table(os.environ.get("DH_TABLE", "dh_tf_demo")).where(FILTER), session

    from dh_tf.server import start_server

    start_server(heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "512m"), port=int(os.environ["DH_TF_EXAMPLE_PORT"]))
    from deephaven import parquet

    return parquet.read(os.environ["DH_TF_EXAMPLE_PARQUET"]).where(FILTER), None


def train(index: int, out_dir: Path, epochs: int, timeout_s: float) -> None:
    """One worker: trains on its shard and saves the ids it trained on, its step counts and weights."""
    import tensorflow as tf

    # First, before any other TensorFlow op. The timeout bounds every collective: a worker whose
    # peer died raises instead of waiting for ever.
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    )
    import keras

    import dh_tf

    table, session = open_table()

    # The Id rides along with the label (integer labels stay integer), so each worker can record
    # exactly which rows it trained on; the model never sees it.
    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return dh_tf.to_dataset(
            table,
            FEATURES,
            {"label": "Label", "id": "Id"},
            batch_size=GLOBAL_BATCH,
            shuffle=True,
            seed=SEED,
            input_context=ctx,
        )

    dataset = strategy.distribute_datasets_from_function(dataset_fn)

    keras.utils.set_random_seed(SEED)
    with strategy.scope():  # variables mirrored on every replica, initial values from worker 0
        model = keras.Sequential(
            [
                keras.Input(shape=(len(FEATURES),)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def train_step(x: object, y: object) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        def replica_step(x: tf.Tensor, y: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            label = tf.cast(y["label"], tf.float32)[:, None]
            with tf.GradientTape() as tape:
                prediction = model(x, training=True)
                per_row = keras.losses.binary_crossentropy(label, prediction)
                loss = tf.nn.compute_average_loss(per_row, global_batch_size=GLOBAL_BATCH)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # all-reduced
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(prediction > 0.5, tf.float32), label), tf.float32))
            return loss, correct, tf.cast(tf.shape(label)[0], tf.float32)

        loss, correct, rows = strategy.run(replica_step, args=(x, y))
        return tuple(strategy.reduce("SUM", value, axis=None) for value in (loss, correct, rows))

    report: dict[str, np.ndarray] = {}
    for epoch in range(epochs):
        ids, steps, correct_sum, rows_sum = [], 0, 0.0, 0.0
        for x, y in dataset:  # each pass is the next epoch of this worker's dh_tf loader
            ids.extend(t.numpy() for t in strategy.experimental_local_results(y["id"]))
            _, correct, rows = train_step(x, y)
            steps += 1
            correct_sum += float(correct)
            rows_sum += float(rows)
        accuracy = correct_sum / rows_sum  # over the rows of all workers
        print(f"worker {index}: epoch {epoch}: {steps} steps, {rows_sum:,.0f} rows in all, accuracy {accuracy:.3f}")
        report[f"ids_{epoch}"] = np.concatenate(ids)
        report[f"steps_{epoch}"] = np.array(steps)
        report[f"accuracy_{epoch}"] = np.array(accuracy)
    report["weights"] = np.concatenate([w.ravel() for w in model.get_weights()])
    report["jvm"] = np.array("jpy" in sys.modules)  # False when remote: the worker never started a JVM
    np.savez(out_dir / f"worker-{index}.npz", **report)
    if session is not None:
        session.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out_dir: Path, epochs: int, timeout_s: float) -> list[dict[str, np.ndarray]]:
    """Runs the workers as this script with TF_CONFIG; kills them all if one fails or time runs out.

    Raises:
        RuntimeError: a worker failed, or the workers did not finish within ``timeout_s``.
    """
    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(NUM_WORKERS)]}
    workers, logs = [], []
    for index in range(NUM_WORKERS):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "DH_TF_EXAMPLE_PORT": str(free_port()),  # each worker's own embedded server, if any
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
        log = (out_dir / f"worker-{index}.log").open("w")
        logs.append(log)
        workers.append(subprocess.Popen([sys.executable, __file__], env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    failure = None
    try:
        while failure is None and any(w.poll() is None for w in workers):
            failed = [i for i, w in enumerate(workers) if w.poll() not in (None, 0)]
            if failed:
                failure = f"worker {failed[0]} exited with status {workers[failed[0]].returncode}"
            elif time.monotonic() > deadline:
                failure = f"the workers did not finish within {timeout_s:.0f} s"
            else:
                time.sleep(0.2)
        failed = [i for i, w in enumerate(workers) if w.returncode not in (None, 0)]
        if failure is None and failed:
            failure = f"worker {failed[0]} exited with status {workers[failed[0]].returncode}"
    finally:
        for w in workers:  # a worker whose peer died would wait in a collective op: never leave one
            if w.poll() is None:
                w.kill()
            w.wait(timeout=30)
        for log in logs:
            log.close()
    if failure is not None:
        tails = "\n".join(
            f"--- worker {i} (last lines of {out_dir / f'worker-{i}.log'}):\n"
            + "\n".join((out_dir / f"worker-{i}.log").read_text(errors="replace").splitlines()[-30:])
            for i in range(NUM_WORKERS)
        )
        raise RuntimeError(f"multi_worker: {failure}\n{tails}")
    return [dict(np.load(out_dir / f"worker-{index}.npz")) for index in range(NUM_WORKERS)]


def main() -> None:
    """Without TF_CONFIG: write the data if needed, launch the workers, check what they report."""
    if "TF_CONFIG" in os.environ:
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        epochs = int(os.environ.get("DH_TF_EXAMPLE_EPOCHS", "2"))
        train(task["index"], example_dir(), epochs, timeout_s=float(os.environ.get("DH_TF_EXAMPLE_TIMEOUT", "600")))
        return
    out_dir = example_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("worker-*.npz"):
        stale.unlink()
    if not os.environ.get("DH_HOST"):
        num_rows = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "200000"))
        parquet_path = out_dir / f"multi_worker-{num_rows}.parquet"
        if not parquet_path.exists():
            write_parquet(parquet_path, num_rows)
        os.environ["DH_TF_EXAMPLE_PARQUET"] = str(parquet_path)
    epochs = int(os.environ.get("DH_TF_EXAMPLE_EPOCHS", "2"))
    start = time.perf_counter()
    reports = launch(out_dir, epochs, float(os.environ.get("DH_TF_EXAMPLE_TIMEOUT", "600")))
    seconds = time.perf_counter() - start

    # What the shards promise: disjoint, equal step counts, and (synchronous training) equal weights.
    for epoch in range(epochs):
        ids = [r[f"ids_{epoch}"] for r in reports]
        assert len(set(ids[0].tolist()) & set(ids[1].tolist())) == 0, f"epoch {epoch}: a row reached both workers"
        assert len({int(r[f"steps_{epoch}"]) for r in reports}) == 1, f"epoch {epoch}: unequal step counts"
    assert all(np.array_equal(reports[0]["weights"], r["weights"]) for r in reports), "the workers' weights differ"
    rows = sum(len(r[f"ids_{epochs - 1}"]) for r in reports)
    accuracy = float(reports[0][f"accuracy_{epochs - 1}"])
    print(
        f"{SUCCESS} multi_worker trained {NUM_WORKERS} workers on {rows:,} rows per epoch (disjoint shards, "
        f"{int(reports[0][f'steps_{epochs - 1}'])} steps each), identical weights, accuracy {accuracy:.3f}, "
        f"{seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
