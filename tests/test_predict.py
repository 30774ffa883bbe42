"""predict_table on the real server with real Keras models: order, kept columns, names, dtypes, Parquet, errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from conftest import free_port, run_python

FEATURES = ["A", "B", "C"]
ROWS = 40_000


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def dense(keras, units: int = 1, *, weights: np.ndarray | None = None, dtype: str = "float32"):
    """A one-Dense-layer model on 3 features; default weights: the output is feature A (exactly)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, dtype=dtype)])
    kernel = np.zeros((3, units)) if weights is None else weights
    if weights is None:
        kernel[0, :] = 1.0
    model.layers[0].set_weights([kernel.astype(dtype), np.zeros(units, dtype=dtype)])
    return model


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(
        ROWS,
        "A = (double)Id",
        "B = Math.sin(i)",
        "C = (i % 7) - 3.0",
        "Key = `k` + (i % 100)",
        "Ts = '2024-01-01T00:00:00Z' + i * SECOND",
    )


@pytest.fixture(scope="module")
def parquet_table(server, table, tmp_path_factory):
    from deephaven import parquet

    path = tmp_path_factory.mktemp("input") / "input.parquet"
    parquet.write(table, str(path))
    return parquet.read(str(path))


def features_of(table) -> np.ndarray:
    from deephaven.numpy import to_numpy

    return to_numpy(table, FEATURES).astype(np.float32)


def column(table, name):
    from deephaven.numpy import to_numpy

    return to_numpy(table, [name])[:, 0]


def types(table) -> dict[str, str]:
    return {c.name: str(c.data_type) for c in table.columns}


@pytest.mark.parametrize("write_path", ["engine", "public"])
def test_in_heap_predictions_in_table_order(keras, table, write_path):
    from dh_tf.write.predict_table import predict_table

    model = dense(keras, weights=np.array([[0.5], [-2.0], [1.5]]))
    source = table.where("Id % 3 != 0")  # sparse row keys
    result = predict_table(
        model, source, FEATURES, keep=["Id", "Key", "Ts"], batch_size=1024, page_rows=8192, write_path=write_path
    )
    assert [c.name for c in result.columns] == ["Id", "Key", "Ts", "Prediction"]
    assert result.size == source.size and not result.is_refreshing
    expected = model.predict(features_of(source), batch_size=1024, verbose=0)[:, 0]
    np.testing.assert_allclose(column(result, "Prediction"), expected, rtol=1e-6, atol=1e-6)
    for name in ["Id", "Key", "Ts"]:
        np.testing.assert_array_equal(column(result, name), column(source, name))
    assert types(result)["Prediction"] == "float"


def test_prediction_is_feature_a_exactly_so_order_is_exact(keras, table):
    from dh_tf.write.predict_table import predict_table

    source = table.where("Id % 5 < 3")
    result = predict_table(dense(keras), source, FEATURES, keep="Id", output="P", batch_size=500, page_rows=5000)
    np.testing.assert_array_equal(column(result, "P"), column(source, "Id").astype(np.float32))


def test_parquet_path_filtered_parquet_input(keras, parquet_table, tmp_path):
    from dh_tf.write.predict_table import PAGE_FILE, predict_table

    model = dense(keras, weights=np.array([[1.0], [2.0], [3.0]]))
    source = parquet_table.where(["Id % 3 != 0", "C > -3"])
    out = tmp_path / "scores.parquet"
    result = predict_table(model, source, FEATURES, keep=["Id", "Ts"], batch_size=2048, page_rows=4096, directory=out)
    files = sorted(os.listdir(out))
    assert len(files) >= -(-source.size // 4096) and files == [PAGE_FILE.format(index=i) for i in range(len(files))]
    assert os.listdir(tmp_path) == ["scores.parquet"]  # no partial directory left
    assert result.size == source.size
    np.testing.assert_array_equal(column(result, "Id"), column(source, "Id"))
    np.testing.assert_array_equal(column(result, "Ts"), column(source, "Ts"))
    expected = model.predict(features_of(source), batch_size=2048, verbose=0)[:, 0]
    np.testing.assert_allclose(column(result, "Prediction"), expected, rtol=1e-6, atol=1e-5)


def test_keras_predict_step_and_a_partial_last_batch(keras, table):
    from dh_tf.write.predict_table import predict_table

    class Doubled(keras.Model):
        def predict_step(self, data):  # model.predict calls it: so must predict_table
            return super().predict_step(data) * 2.0

    inputs = keras.Input((3,))
    layer = keras.layers.Dense(1)
    model = Doubled(inputs, layer(inputs))
    layer.set_weights([np.array([[1.0], [0.0], [0.0]], np.float32), np.zeros(1, np.float32)])
    source = table.head(10_001)  # 10 batches of 1000 rows, then one of 1 row
    result = predict_table(model, source, FEATURES, keep="Id", batch_size=1000)
    expected = model.predict(features_of(source), batch_size=1000, verbose=0)[:, 0]
    np.testing.assert_array_equal(column(result, "Prediction"), expected)
    np.testing.assert_array_equal(expected, column(source, "Id").astype(np.float32) * 2)


def test_multi_column_and_float64_outputs(keras, table):
    from dh_tf.write.predict_table import predict_table

    source = table.head(5000)
    model = dense(keras, 3, weights=np.arange(9.0).reshape(3, 3), dtype="float64")
    result = predict_table(model, source, FEATURES, output=["P0", "P1", "P2"], batch_size=256)
    assert types(result) == {"P0": "double", "P1": "double", "P2": "double"}
    expected = model.predict(features_of(source), batch_size=256, verbose=0)
    for index in range(3):
        np.testing.assert_allclose(column(result, f"P{index}"), expected[:, index], rtol=1e-12)


def test_multi_output_dict_and_list_models(keras, table):
    from dh_tf.write.predict_table import predict_table

    source = table.head(3000)
    inputs = keras.Input((3,))
    p = keras.layers.Dense(2, name="p")(inputs)
    q = keras.layers.Dense(1, name="q", dtype="float64")(inputs)
    x = features_of(source)
    for model in (keras.Model(inputs, {"class": p, "value": q}), keras.Model(inputs, [p, q])):
        spec = {"class": ["P0", "P1"], "value": "V"} if isinstance(model.output, dict) else {"q": "V", "p": ["P0", "P1"]}
        result = predict_table(model, source, FEATURES, keep="Id", output=spec, batch_size=512)
        assert types(result) == {"Id": "long", "P0": "float", "P1": "float", "V": "double"}
        expected = model.predict(x, batch_size=512, verbose=0)
        p_values, q_values = (expected["class"], expected["value"]) if isinstance(expected, dict) else expected
        np.testing.assert_allclose(column(result, "P1"), p_values[:, 1], rtol=1e-6)
        np.testing.assert_allclose(column(result, "V"), q_values[:, 0], rtol=1e-12)


def test_multi_output_models_get_numbered_default_names(keras, table):
    from dh_tf.errors import ArgumentError
    from dh_tf.write.predict_table import predict_table

    source = table.head(3000)
    inputs = keras.Input((3,))
    p = keras.layers.Dense(1, name="p")(inputs)
    q = keras.layers.Dense(1, name="q", dtype="float64")(inputs)
    model = keras.Model(inputs, [p, q])
    result = predict_table(model, source, FEATURES, keep="Id", batch_size=512)
    assert types(result) == {"Id": "long", "Prediction0": "float", "Prediction1": "double"}
    expected = model.predict(features_of(source), batch_size=512, verbose=0)
    np.testing.assert_allclose(column(result, "Prediction0"), expected[0][:, 0], rtol=1e-6)
    np.testing.assert_allclose(column(result, "Prediction1"), expected[1][:, 0], rtol=1e-12)

    scored = predict_table(lambda x: (x[:, 0], x[:, 0] * 2), source, FEATURES, output="S")  # a callable's tuple
    assert types(scored) == {"S0": "float", "S1": "float"}
    np.testing.assert_array_equal(column(scored, "S1"), column(source, "A").astype(np.float32) * 2)
    with pytest.raises(ArgumentError, match=r"predict_table: keep must not name an output column \(got \['Prediction1'\], "
                       r"the numbered names of output 'Prediction' for the model's 2 outputs\); rename the output"):
        predict_table(lambda x: (x[:, 0], x[:, 1]), source.update("Prediction1 = 1"), FEATURES, keep="Prediction1")


def test_callable_with_int_outputs_and_dict_features(table):
    from dh_tf.write.predict_table import predict_table

    def classify(x):
        return {"label": (x["ab"][:, 0] % 4).astype(np.int32), "big": x["c"].astype(np.int64) * 10**10}

    source = table.head(10_000)
    result = predict_table(
        classify, source, {"ab": ["A", "B"], "c": "C"}, output={"big": "Big", "label": "Label"}, batch_size=1000
    )
    assert types(result) == {"Label": "int", "Big": "long"}
    np.testing.assert_array_equal(column(result, "Label"), column(source, "Id") % 4)
    np.testing.assert_array_equal(column(result, "Big"), column(source, "C").astype(np.int64) * 10**10)


def test_empty_table(keras, table, tmp_path):
    from dh_tf.write.predict_table import predict_table

    empty = table.where("Id < 0")
    result = predict_table(dense(keras, 2), empty, FEATURES, keep=["Key"], output=["P", "Q"])
    assert result.size == 0 and types(result) == {"Key": "java.lang.String", "P": "float", "Q": "float"}
    stored = predict_table(dense(keras), empty, FEATURES, keep="Id", directory=tmp_path / "empty")
    assert stored.size == 0 and types(stored) == {"Id": "long", "Prediction": "float"}


def test_refreshing_input_is_scored_as_one_snapshot(keras, server):
    from deephaven import time_table

    from dh_tf.write.predict_table import predict_table

    ticking = time_table("PT0.001s").update(["Id = ii", "A = (double)ii", "B = 1.0", "C = -1.0"])
    deadline = time.monotonic() + 30
    while ticking.size < 2000 and time.monotonic() < deadline:
        time.sleep(0.1)
    before = ticking.size
    result = predict_table(dense(keras), ticking, FEATURES, keep=["Id", "Timestamp"], batch_size=256)
    assert not result.is_refreshing
    assert before <= result.size <= ticking.size
    ids = column(result, "Id")
    np.testing.assert_array_equal(ids, np.arange(result.size))
    np.testing.assert_array_equal(column(result, "Prediction"), ids.astype(np.float32))


def test_bad_output_count_for_keras_models(keras, table):
    from dh_tf.write.predict_table import predict_table

    inputs = keras.Input((3,))
    two = keras.Model(inputs, {"p": keras.layers.Dense(2)(inputs), "q": keras.layers.Dense(1)(inputs)})
    with pytest.raises(ValueError, match=r"predict_table: output must name one column per column of the model's output of shape \[n, 2\] \(got \['P'\]"):
        predict_table(dense(keras, 2), table, FEATURES, output="P")
    with pytest.raises(ValueError, match=r"output must name one column per column of model output 'p' of shape \[n, 2\] "
                       r"\(got \['Prediction0'\], which needs shape \[n\] or \[n, 1\]\); 'Prediction' numbered one "
                       r"column per output: name wider outputs' columns with a dict"):
        predict_table(two, table, FEATURES)
    with pytest.raises(ValueError, match=r"output must have one entry per model output \['p', 'q'\] \(got \{'p': \['A0', 'A1'\]\}\)"):
        predict_table(two, table, FEATURES, output={"p": ["A0", "A1"]})
    with pytest.raises(ValueError, match=r"output must be a column name or a list of names for a model with one output"):
        predict_table(dense(keras), table, FEATURES, output={"x": "P"})


def test_bad_callable_output_fails_at_first_group_and_leaves_nothing(table, tmp_path):
    from dh_tf.write.predict_table import predict_table

    calls = []

    def two_columns(x):
        calls.append(len(x))
        return np.zeros((len(x), 2), dtype=np.float32)

    out = tmp_path / "scores"
    with pytest.raises(ValueError, match=r"output must name one column per column of the model's output of shape \[n, 2\]"):
        predict_table(two_columns, table, FEATURES, directory=out, page_rows=4096, batch_size=1024)
    assert len(calls) == 1 and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"the model's output must have one row per input row \(got 3 rows for 1024 input rows\)"):
        predict_table(lambda x: np.zeros(3), table, FEATURES, batch_size=1024, page_rows=1024)
    with pytest.raises(TypeError, match=r"model outputs must be numeric or boolean \(got dtype <U1\)"):
        predict_table(lambda x: np.array(["a"] * len(x)), table, FEATURES)


def test_bad_keep_path_and_options(keras, table, tmp_path):
    from dh_tf.write.predict_table import predict_table

    model = dense(keras)
    with pytest.raises(ValueError, match=r"predict_table: keep must name columns of the table \(got unknown \['Nope'\]; the table has \['Id', 'A',"):
        predict_table(model, table, FEATURES, keep=["Id", "Nope"])
    with pytest.raises(ValueError, match=r"keep must not name an output column \(got \['Id'\], also in output\)"):
        predict_table(model, table, FEATURES, keep="Id", output="Id")
    with pytest.raises(ValueError, match=r"output must name valid Deephaven columns \(got 'my score'"):
        predict_table(model, table, FEATURES, output="my score")
    with pytest.raises(ValueError, match=r"shuffle must not be given \(got shuffle=True\)"):
        predict_table(model, table, FEATURES, shuffle=True)
    with pytest.raises(TypeError, match=r"model must be a Keras model or a callable"):
        predict_table("model", table, FEATURES)
    with pytest.raises(TypeError, match=r"table must be a deephaven.table.Table"):
        predict_table(model, np.zeros((3, 3)), FEATURES)
    with pytest.raises(ValueError, match=r"TableLoader: unknown column\(s\) \['Z'\]"):
        predict_table(model, table, ["A", "B", "Z"])

    out = tmp_path / "scores.parquet"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError, match=r"directory must not exist or be an empty directory unless overwrite=True \(got '.*scores.parquet': a non-empty directory\)"):
        predict_table(model, table, FEATURES, directory=out)
    assert os.listdir(out) == ["old.txt"]
    result = predict_table(model, table.head(100), FEATURES, keep="Id", directory=out, overwrite=True)
    assert os.listdir(out) == ["part-00000000.parquet"] and sorted(os.listdir(tmp_path)) == ["scores.parquet"]
    np.testing.assert_array_equal(column(result, "Prediction"), np.arange(100, dtype=np.float32))


@pytest.mark.parametrize("batch_size", ["8", 2.0, True, None])
def test_non_int_batch_size_is_an_argument_type_error(keras, table, batch_size):
    from dh_tf.errors import ArgumentError, ArgumentTypeError
    from dh_tf.write.predict_table import predict_table

    expected = rf"predict_table: batch_size must be an int >= 1 \(got {batch_size!r} of type {type(batch_size).__name__}\)"
    with pytest.raises(ArgumentTypeError, match=expected):
        predict_table(dense(keras), table, FEATURES, batch_size=batch_size)
    with pytest.raises(ArgumentError, match=r"predict_table: batch_size must be an int >= 1 \(got 0\)"):
        predict_table(dense(keras), table, FEATURES, batch_size=0)


BIG_ROWS = 2_400_000
BIG_COLUMNS = 32
BIG_FILTER = "Id % 100000 < 90000"
HEAP = "192m"

CHILD = """
import json, sys, time
started = time.monotonic()
import numpy as np
from dh_tf.server import start_server
start_server(heap=sys.argv[2], port=int(sys.argv[3]))
import keras
from deephaven import parquet
from deephaven.numpy import to_numpy
from dh_tf.diagnostics import memory_report
import dh_tf
from dh_tf.write.predict_table import predict_table
features = [f"F{i}" for i in range(int(sys.argv[6]))]
model = keras.Sequential([keras.Input((len(features),)), keras.layers.Dense(1)])
weights = np.linspace(-1, 1, len(features), dtype=np.float32).reshape(-1, 1)
model.layers[0].set_weights([weights, np.array([0.25], np.float32)])
table = parquet.read(sys.argv[1]).where(sys.argv[5])
ready = time.monotonic()
result = predict_table(model, table, features, keep="Id", batch_size=65536, page_rows=131072, directory=sys.argv[4])
scored = time.monotonic()
positions = np.sort(np.random.default_rng(0).choice(result.size, 20, replace=False)).tolist()
ids = to_numpy(result.view("Id"), ["Id"])[:, 0]
all_ids = np.arange(int(sys.argv[7]))
checks = [(p, result.slice(p, p + 1), table.slice(p, p + 1)) for p in positions]
max_error = 0.0
ids_match = True
for p, got, source in checks:
    x = to_numpy(source, features).astype(np.float32)
    expected = float(model.predict_on_batch(x)[0, 0])
    error = abs(float(to_numpy(got, ["Prediction"])[0, 0]) - expected) / max(1.0, abs(expected))
    max_error = max(max_error, error)
    ids_match &= int(to_numpy(got, ["Id"])[0, 0]) == int(to_numpy(source, ["Id"])[0, 0])
report = memory_report()
print(json.dumps(dict(rows=result.size, input_rows=table.size, max_error=max_error, ids_match=ids_match,
                      all_ids_match=bool(np.array_equal(ids, all_ids[all_ids % 100000 < 90000])),
                      heap_max_mib=report.heap_max_mib, seconds=dict(start=round(ready - started, 1),
                      score=round(scored - ready, 1), check=round(time.monotonic() - scored, 1)))))
"""


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("big") / "big.parquet"
    schema = pa.schema([("Id", pa.int64())] + [(f"F{i}", pa.float64()) for i in range(BIG_COLUMNS)])
    step = 400_000
    # PLAIN, uncompressed: the fast decode path (docs/design.md section 4), so the test times scoring, not decoding
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for start in range(0, BIG_ROWS, step):
            ids = np.arange(start, start + step, dtype=np.int64)
            columns = [pa.array(ids)] + [pa.array((ids % 1000) * 0.001 + i) for i in range(BIG_COLUMNS)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=step)
    return path


@pytest.mark.slow
def test_scoring_a_table_several_times_the_heap_to_parquet(big_parquet, tmp_path):
    out = tmp_path / "scores.parquet"
    proc = run_python(
        CHILD, str(big_parquet), HEAP, str(free_port()), str(out), BIG_FILTER, str(BIG_COLUMNS), str(BIG_ROWS),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OutOfMemoryError" not in proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    decoded_mib = BIG_ROWS * (BIG_COLUMNS + 1) * 8 / 2**20
    assert result["heap_max_mib"] * 3 < decoded_mib
    ids = np.arange(BIG_ROWS)
    kept = ids[ids % 100000 < 90000]
    assert result["rows"] == result["input_rows"] == len(kept)
    assert result["ids_match"] and result["all_ids_match"]  # every kept Id, in order
    assert result["max_error"] < 1e-5  # relative: one row alone sums in another order than its batch
    assert len(os.listdir(out)) > 1


def test_path_is_the_deprecated_name_of_directory(keras, table, tmp_path):
    import dh_tf
    from dh_tf.write.predict_table import predict_table

    model = dense(keras)
    with pytest.warns(DeprecationWarning, match=r"predict_table: path= is renamed directory="):
        result = predict_table(model, table.head(10), FEATURES, path=tmp_path / "old")
    assert os.listdir(tmp_path / "old") == ["part-00000000.parquet"] and int(result.size) == 10
    with pytest.raises(dh_tf.ArgumentError, match=r"pass directory= only \(got both directory= and its old name path=\)"):
        predict_table(model, table, FEATURES, path=tmp_path / "a", directory=tmp_path / "b")
