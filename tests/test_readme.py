"""The README's example runs as written: a fresh Python process (its own JVM) trains and writes predictions.

It is what a Keras user copies first, so it must also run free of misleading warnings: Keras warns that
``fit(shuffle=True)`` (its default) is ignored for a dataset "expected to already be shuffled", which is
wrong advice for a dataset that shuffles itself; the example passes ``shuffle=True`` to ``to_dataset`` and
``shuffle=False`` to ``fit``.
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO, run_python
from test_docs import code_blocks

README = REPO / "README.md"


def readme_example() -> str:
    (example,) = [block.code for block in code_blocks(README) if block.not_run is None]
    return example


def test_the_readme_stays_short_and_has_one_python_example():
    assert len(README.read_text().splitlines()) <= 150
    example = readme_example()
    assert len(example.splitlines()) <= 30
    assert all(call in example for call in ("dh_tf.split(", "shuffle=True", "validation_data=", "predict_table("))


@pytest.mark.slow
def test_the_readme_example_trains_and_writes_predictions(tmp_path):
    result = run_python(readme_example(), timeout=600, cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    scored = re.search(r"^(\d+) predictions of (\d+) rows; accuracy (\d\.\d+)$", result.stdout, re.MULTILINE)
    assert scored, result.stdout[-3000:]
    predictions, valid_rows, accuracy = int(scored[1]), int(scored[2]), float(scored[3])
    # `A != 0` drops row 0 only (sin(i * 0.1) is 0 at i = 0 alone); split gives 20% of the 19,999 rows to
    # validation, up to sampling error (binomial: sd = sqrt(19,999 * 0.2 * 0.8) = 57 rows)
    assert predictions == valid_rows and abs(valid_rows - 0.2 * 19_999) < 4 * 57, scored[0]
    assert accuracy > 0.8, scored[0]  # the label is a function of the features: the model learns it
    assert "Epoch 3/3" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "Warning" in line]
    assert not warnings, warnings
