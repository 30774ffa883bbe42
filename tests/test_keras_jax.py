"""Keras 3 on JAX trains from a Deephaven table through dh_tf.to_py_dataset, with TensorFlow blocked from import.

Everything runs in ONE subprocess (tests/keras_jax_script.py: its own JVM, ``KERAS_BACKEND=jax``,
``import tensorflow`` failing as if it were not installed): examples/keras_jax.py, then a fit whose
training steps record the ids they trained on, compared here with the same TableLoader's epochs
(NOTE [ PyDataset epochs ] in dh_tf/keras/epoch_batches.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, free_port

pytestmark = pytest.mark.slow

NUM_ROWS, BATCH, EPOCHS = 200, 32, 3  # as in the script: 7 batches per epoch, the last of 8 rows


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras_jax") / "facts.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "keras_jax_script.py"), str(free_port()), str(out)],
        cwd=out.parent, capture_output=True, text=True, timeout=540, check=False,
    )
    assert done.returncode == 0 and "finished" in done.stdout, (done.stdout + done.stderr)[-6000:]
    assert "dh_tf example OK: keras_jax trained on" in done.stdout, done.stdout[-6000:]
    return json.loads(out.read_text())


def test_runs_on_jax_without_tensorflow(facts):
    assert facts["backend"] == "jax"
    assert facts["tensorflow_imported"] is False
    assert facts["example_loss"][-1] < facts["example_loss"][0]


def test_each_keras_epoch_trains_the_loaders_epoch_once_in_its_order(facts):
    reference = facts["reference"]  # TableLoader epochs 0, 1, 2, batch by batch
    assert facts["len"] == 7 and len(reference) == 7 * EPOCHS
    assert [len(b) for b in reference[:7]] == [32] * 6 + [8]
    for epoch in range(EPOCHS):
        rows = sorted(i for batch in reference[7 * epoch : 7 * epoch + 7] for i in batch)
        assert rows == list(range(NUM_ROWS)), f"epoch {epoch} of the loader is not a permutation"
    assert reference[:7] != reference[7:14]  # a new order each epoch
    assert facts["trained"] == reference  # the peek's batch 0 did not count as an epoch
    assert facts["state_after_fit"] == {"epoch": 3, "batches": 0}
    assert facts["loss"][-1] < facts["loss"][0] / 10


def test_sync_epochs_pins_keras_epoch_e_to_loader_epoch_e(facts):
    assert facts["trained_sync"] == facts["reference"][:14]


def test_evaluate_and_predict_see_each_row_once_in_row_order(facts):
    assert facts["predict"] == [float(i) for i in range(NUM_ROWS)]
    # mse of predictions Id against 0, weighted by W = 1 on even rows: sum of even Id**2 / rows
    assert facts["evaluate"] == pytest.approx(sum(i * i for i in range(0, NUM_ROWS, 2)) / NUM_ROWS, rel=1e-6)


def test_keras_shuffle_and_worker_pools_are_refused(facts):
    assert facts["shuffle_error"] == (
        "to_py_dataset: model.fit(..., shuffle=True), Keras' default, shuffles a PyDataset's batch indices, but this "
        "PyDataset serves each epoch's batches in dh_tf's order, reading each page once; call "
        "model.fit(..., shuffle=False), and let dh_tf shuffle the rows with dh_tf.to_py_dataset(..., shuffle=True, "
        "seed=...)"
    )
    reason = ("dh_tf reads pages on its own reader threads (reader_threads=) and serves an epoch's batches in order, "
              "so Keras' worker pool would only shuffle the order; leave it out")
    assert facts["workers_error"] == f"to_py_dataset: workers must be 1 (got workers=4); {reason}"
    assert facts["multiprocessing_error"] == (
        f"to_py_dataset: use_multiprocessing must be False (got use_multiprocessing=True); {reason}"
    )
