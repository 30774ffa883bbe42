"""Keras ``model.fit`` on several tf.distribute workers, each reading its own shard of one Deephaven table.

Run ``python examples/keras_multi_worker.py``: it starts one embedded Deephaven server with the demo
table (``pip install 'dh-tf[server,remote,tf-keras]'``), then two worker processes on this machine,
each this same script with a ``TF_CONFIG`` naming both; the workers read the table over pydeephaven
(no JVM of their own). With ``DH_HOST`` set, the workers read table ``DH_TABLE`` of that server
instead (``DH_PORT``, pre-shared key ``DH_PSK``, anonymous when unset) and no server is started.
Each worker fills a live ``MetricsTable`` on that server, bound as ``<DH_TABLE>_metrics_<worker index>``.
On real machines, start one worker per machine yourself, with the same ``TF_CONFIG`` cluster and
its own ``task.index``.

The recipe, in each worker (see :func:`train`):

1. ``TF_USE_LEGACY_KERAS=1`` in the environment before TensorFlow is imported, so ``tf.keras`` is
   ``tf_keras`` (Keras 2): Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``
   (keras-team/keras#20585). Install ``tf-keras`` of your TensorFlow's minor version.
2. ``tf.distribute.MultiWorkerMirroredStrategy()``, created first, before any other TensorFlow op.
3. ``data = dh_tf.distributed_fit_dataset(strategy, table, features, label, batch_size=GLOBAL_BATCH,
   shuffle=True, seed=SEED)``: each worker reads its own shard; Keras epoch e reads loader epoch e.
4. The model built and compiled under ``strategy.scope()`` with ``tf.keras``, then
   ``model.fit(data.dataset, steps_per_epoch=data.steps_per_epoch, epochs=EPOCHS)``.

Each worker reports what it trained on (the ids of its rows, batch by batch), its steps, losses and
final weights; the launcher checks that the shards are disjoint, the steps equal and the weights
identical. Environment variables: DH_TF_EXAMPLE_ROWS (rows of the demo table, default 100,000),
DH_TF_EXAMPLE_DIR (what each worker reports; default ~/.cache/dh_tf/keras_multi_worker),
DH_TF_EXAMPLE_TIMEOUT (seconds for the whole run, default 600), DH_TF_EXAMPLE_EPOCHS (default 3).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

FEATURES = [f"X{n}" for n in range(8)]
# The demo table, as DQL: pseudo-random features in [-1, 1) from the row index, and a learnable label.
FORMULAS = [
    "Id = (long)i",
    *(f"X{n} = (double)(((long)i * {7919 + 104729 * n}L + {n * 31}L) % 2003L) / 1001.5 - 1.0" for n in range(8)),
    "Label = (X0 + X1 * X2 - 0.5 * X3 + 0.25 * X4 > 0) ? 1 : 0",
]
GLOBAL_BATCH = 64  # split between the replicas of all workers
SEED = 7  # the same on every worker: one global shuffled order per epoch
NUM_WORKERS = 2
SUCCESS = "dh_tf example OK:"


def example_dir() -> Path:
    default = Path.home() / ".cache" / "dh_tf" / "keras_multi_worker"
    return Path(os.environ.get("DH_TF_EXAMPLE_DIR") or default)


def table_name() -> str:
    return os.environ.get("DH_TABLE") or "dh_tf_keras_workers"


def open_table() -> tuple[object, object]:
    """The table this worker trains on and its pydeephaven session."""
    from pydeephaven import Session

    psk = os.environ.get("DH_PSK")
    auth = (
        {"auth_type": "io.deephaven.authentication.psk.PskAuthenticationHandler", "auth_token": psk}
        if psk
        else {"auth_type": "Anonymous"}
    )
    session = Session(host=os.environ["DH_HOST"], port=int(os.environ.get("DH_PORT", "10000")), **auth)
    return session.open_table(table_name()), session


def train(index: int, out_dir: Path, epochs: int, timeout_s: float) -> None:
    """One worker: fits on its shard and saves the ids it trained on, its steps, losses and weights."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported: tf.keras is tf_keras
    import tensorflow as tf

    # First, before any other TensorFlow op. The timeout bounds every collective: a worker whose
    # peer died raises instead of waiting for ever.
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    )
    keras = tf.keras  # tf_keras (Keras 2)

    import dh_tf

    table, session = open_table()
    # The Id rides along with the label (integer labels stay integer), so the worker can record which
    # rows it trained on; the model never sees it.
    data = dh_tf.distributed_fit_dataset(
        strategy, table, FEATURES, {"label": "Label", "id": "Id"}, batch_size=GLOBAL_BATCH, shuffle=True, seed=SEED
    )

    seen: list[np.ndarray] = []  # the ids of each batch this worker trained on

    class Model(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = keras.layers.Dense(32, activation="relu")
            self.out = keras.layers.Dense(1, activation="sigmoid")

        def call(self, x: tf.Tensor) -> tf.Tensor:
            return self.out(self.hidden(x))

        def train_step(self, batch: tuple) -> dict:
            x, y = batch
            tf.py_function(lambda ids: seen.append(ids.numpy()), [y["id"]], [])
            return super().train_step((x, tf.cast(y["label"], tf.float32)[:, None]))

    class Epochs(keras.callbacks.Callback):
        """Where each epoch ends in ``seen``, and the steps of each epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.ends: list[int] = []
            self.steps: list[int] = []

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.steps.append(0)

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.steps[-1] += 1

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.ends.append(len(seen))

    keras.utils.set_random_seed(SEED)
    with strategy.scope():  # variables mirrored on every replica, initial values from worker 0
        model = Model()
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    epochs_seen = Epochs()
    # Live metrics in a table of the server (the IDE shows it as it ticks), from every worker: a
    # callback that reads Keras's metrics takes part in their cross-worker reduction, so every worker
    # must run the same callbacks (the workers log the same values).
    metrics = dh_tf.MetricsTable(every="epoch", session=session, bind_as=f"{table_name()}_metrics_{index}")
    history = model.fit(data.dataset, steps_per_epoch=data.steps_per_epoch, epochs=epochs,
                        callbacks=[epochs_seen, metrics], verbose=2)
    for epoch, loss in enumerate(history.history["loss"]):
        print(f"worker {index}: epoch {epoch}: {epochs_seen.steps[epoch]} steps, loss {loss:.4f}")

    report = {"steps_per_epoch": np.array(data.steps_per_epoch), "steps": np.array(epochs_seen.steps),
              "loss": np.array(history.history["loss"]), "accuracy": np.array(history.history["accuracy"])}
    for epoch, (start, stop) in enumerate(zip([0, *epochs_seen.ends], epochs_seen.ends)):
        report[f"ids_{epoch}"] = np.concatenate(seen[start:stop])
    report["weights"] = np.concatenate([w.ravel() for w in model.get_weights()])
    report["jvm"] = np.array("jpy" in sys.modules)  # False: the worker never started a JVM
    np.savez(out_dir / f"worker-{index}.npz", **report)
    session.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out_dir: Path, env: dict[str, str], timeout_s: float) -> list[dict[str, np.ndarray]]:
    """Runs the workers as this script with TF_CONFIG; kills them all if one fails or time runs out.

    Raises:
        RuntimeError: a worker failed, or the workers did not finish within ``timeout_s``.
    """
    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(NUM_WORKERS)]}
    workers, logs = [], []
    for index in range(NUM_WORKERS):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        worker_env = {**os.environ, **env, "TF_CONFIG": tf_config, "TF_USE_LEGACY_KERAS": "1",
                      "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        log = (out_dir / f"worker-{index}.log").open("w")
        logs.append(log)
        workers.append(subprocess.Popen([sys.executable, __file__], env=worker_env, stdout=log, stderr=subprocess.STDOUT))
    deadline, failure = time.monotonic() + timeout_s, None
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
            f"--- worker {i}:\n" + "\n".join((out_dir / f"worker-{i}.log").read_text(errors="replace").splitlines()[-30:])
            for i in range(NUM_WORKERS)
        )
        raise RuntimeError(f"keras_multi_worker: {failure}\n{tails}")
    return [dict(np.load(out_dir / f"worker-{index}.npz")) for index in range(NUM_WORKERS)]


def serve_demo_table(num_rows: int) -> dict[str, str]:
    """Starts an embedded server with the demo table; returns the workers' DH_* variables."""
    import __main__
    from dh_tf.server import start_server

    port, psk = free_port(), secrets.token_hex(16)
    start_server(heap="512m", port=port, psk=psk)
    from deephaven import empty_table

    __main__.dh_tf_keras_workers = empty_table(num_rows).update(FORMULAS)  # a console global: visible to sessions
    return {"DH_HOST": "localhost", "DH_PORT": str(port), "DH_PSK": psk, "DH_TABLE": "dh_tf_keras_workers"}


def main() -> None:
    """Without TF_CONFIG: serve the table if needed, launch the workers, check what they report."""
    epochs = int(os.environ.get("DH_TF_EXAMPLE_EPOCHS", "3"))
    timeout_s = float(os.environ.get("DH_TF_EXAMPLE_TIMEOUT", "600"))
    if "TF_CONFIG" in os.environ:
        try:
            train(json.loads(os.environ["TF_CONFIG"])["task"]["index"], example_dir(), epochs, timeout_s)
        except BaseException:  # TensorFlow's collective threads can keep a failed worker alive: leave now
            traceback.print_exc()
            sys.stdout.flush()
            os._exit(1)
        return
    out_dir = example_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("worker-*.npz"):
        stale.unlink()
    env = {} if os.environ.get("DH_HOST") else serve_demo_table(int(os.environ.get("DH_TF_EXAMPLE_ROWS", "100000")))
    start = time.perf_counter()
    reports = launch(out_dir, env, timeout_s)
    seconds = time.perf_counter() - start

    # What sharded synchronous training promises: disjoint shards, equal steps, equal weights.
    for epoch in range(epochs):
        ids = [r[f"ids_{epoch}"] for r in reports]
        assert not np.intersect1d(ids[0], ids[1]).size, f"epoch {epoch}: a row reached both workers"
    assert len({tuple(r["steps"]) for r in reports}) == 1, "unequal step counts"
    assert all(np.array_equal(reports[0]["weights"], r["weights"]) for r in reports), "the workers' weights differ"
    rows = sum(len(r[f"ids_{epochs - 1}"]) for r in reports)
    print(
        f"{SUCCESS} keras_multi_worker fit {NUM_WORKERS} tf_keras workers on {rows:,} rows per epoch (disjoint "
        f"shards, {int(reports[0]['steps_per_epoch'])} steps each), identical weights, loss "
        f"{reports[0]['loss'][0]:.3f} -> {reports[0]['loss'][-1]:.3f}, accuracy {reports[0]['accuracy'][-1]:.3f}, "
        f"{seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
