"""Keras 3 epoch e trains on exactly loader epoch e, with and without a tf.distribute strategy.

The fits run in one subprocess (tests/keras_epochs_script.py: its own JVM and two logical CPU
devices); each training step records the ids of the rows it trained on, and this test compares
them with the batches of the same loader epoch read by a plain TableLoader (NOTE [ Keras peeks ]).
"""

from __future__ import annotations

import json
import sys
from itertools import groupby

import pytest
from conftest import REPO, free_port

import dh_tf

pytestmark = pytest.mark.slow

NUM_ROWS, BATCH, SEED, EPOCHS = 240, 16, 5, 3  # as in the script: 15 batches per epoch
FORMULAS = ["X = (double)(i % 7)", "Y = X * 2"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    import subprocess

    out = tmp_path_factory.mktemp("keras_epochs") / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "keras_epochs_script.py"), str(free_port()), str(out), str(NUM_ROWS)],
        cwd=REPO, capture_output=True, text=True, timeout=540, check=False,
    )
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-6000:]
    return json.loads(out.read_text())


def trained_epochs(records: list) -> dict[int, list[list[int]]]:
    """Epoch -> the sorted ids of each step, in training order (a step's replicas' halves merged)."""
    epochs: dict[int, list[list[int]]] = {}
    for (epoch, _), parts in groupby(records, key=lambda r: (r[0], r[1])):
        epochs.setdefault(epoch, []).append(sorted(i for part in parts for i in part[2]))
    return epochs


def loader_epoch(table, epoch: int, batch_size: int = BATCH) -> list[list[int]]:
    loader = dh_tf.TableLoader(table, "Id", batch_size=batch_size, shuffle=True, seed=SEED, page_rows=64)
    loader.set_epoch(epoch)
    return [sorted(int(i) for i in batch) for batch in loader]


@pytest.mark.parametrize("strategy", ["none", "mirrored"])
@pytest.mark.parametrize("case", ["plain", "sync", "resumable"])
def test_keras_epoch_e_trains_loader_epoch_e_once(results, make_table, strategy, case):
    table = make_table(NUM_ROWS, *FORMULAS)
    trained = trained_epochs(results[f"{strategy}/{case}"])
    assert sorted(trained) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        assert trained[epoch] == loader_epoch(table, epoch), f"{strategy}/{case}: Keras epoch {epoch}"


@pytest.mark.parametrize("strategy", ["none", "mirrored"])
def test_a_resume_through_load_state_dict_trains_exactly_the_rest(results, make_table, strategy):
    table = make_table(NUM_ROWS, *FORMULAS)
    trained = trained_epochs(results[f"{strategy}/load_state"])
    assert sorted(trained) == [1, 2]
    assert trained[1] == loader_epoch(table, 1)[5:]  # batches 5.. of epoch 1, in order, once
    assert trained[2] == loader_epoch(table, 2)


@pytest.mark.parametrize("strategy", ["none", "mirrored"])
def test_a_tiny_epoch_survives_the_peek_that_reads_it_whole(results, make_table, strategy):
    table = make_table(3 * BATCH, *FORMULAS)
    trained = trained_epochs(results[f"{strategy}/tiny"])
    assert [trained[e] for e in range(EPOCHS)] == [loader_epoch(table, e) for e in range(EPOCHS)]


@pytest.mark.parametrize("strategy, replicas", [("none", 1), ("mirrored", 2)])
def test_keras3_fit_of_distributed_fit_dataset_reads_loader_epoch_e(results, make_table, strategy, replicas):
    table = make_table(NUM_ROWS, *FORMULAS)
    trained = trained_epochs(results[f"{strategy}/distributed"])
    for epoch in range(EPOCHS):
        batches = loader_epoch(table, epoch, BATCH // replicas)  # one batch per replica per step
        steps = len(batches) // replicas
        expected = [sorted(i for b in batches[s * replicas:(s + 1) * replicas] for i in b) for s in range(steps)]
        assert trained[epoch] == expected, f"{strategy}: Keras epoch {epoch}"


@pytest.mark.parametrize("callback", ["sync", "resumable"])
def test_steps_per_epoch_other_than_an_epoch_is_refused_by_epoch_exact_callbacks(results, callback):
    message = results["refusals"][callback]
    assert "steps_per_epoch=4 differs from the loader's 15 batches per epoch" in message, message


@pytest.mark.parametrize("strategy", ["none", "mirrored"])
def test_follow_dataset_loses_and_repeats_no_row_under_the_peek(results, strategy):
    trained = trained_epochs(results[f"{strategy}/follow"])
    ids = [i for step in trained[0] for i in step]
    assert sorted(ids) == list(range(160))  # the first 160 rows published after follow_dataset(), each once
