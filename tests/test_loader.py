"""TableLoader and to_dataset on a real embedded server: coverage, order, values, dtypes, shuffle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dh_tf
from dh_tf.reading.reader_threads import READER_THREAD_NAME

ALL_TYPES = [
    "B = (byte)(i % 100 - 50)",
    "S = (short)(i * 3 - 500)",
    "I = (int)(i * 7 - 1000)",
    "L = (long)i * 1000003",
    "F = (float)(i * 0.5)",
    "D = i * 0.25 - 3",
    "Bool = i % 3 == 0",
]


@pytest.fixture(scope="module")
def typed_table(make_table):
    return make_table(1000, *ALL_TYPES)


@pytest.fixture(scope="module", params=["memory", "parquet"])
def id_table(request, make_table, tmp_path_factory):
    """A 2000-row table whose Id equals its row position: in memory, or Parquet read back and filtered."""
    if request.param == "memory":
        return make_table(2000, "X = (double)Id * 2")
    from deephaven import parquet

    path = str(tmp_path_factory.mktemp("pq") / "ids.parquet")
    parquet.write(make_table(4000, "X = (double)Id * 2", "Keep = i % 2 == 0"), path)
    filtered = parquet.read(path).where("Keep").update_view(["Id = Id / 2", "X = (double)Id * 2"])
    assert filtered.size == 2000
    return filtered


def ids_and_sizes(loader):
    batches = list(loader)
    ids = np.concatenate([x for x, _ in batches]) if batches else np.empty(0)
    return ids, [len(x) for x, _ in batches]


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("read_path", ["engine", "public"])
@pytest.mark.parametrize(
    "num_rows,batch_size,page_rows",
    [(34, 16, 16), (34, 16, 20), (32, 16, 16), (100, 7, 10), (1000, 32, 100), (1000, 64, 1000), (999, 100, 333),
     (5, 16, 16), (1, 1, 1), (2000, 128, 4096), (2000, 3, 7)],
)
def test_every_row_once_in_table_order_and_only_last_batch_partial(
    id_table, num_rows, batch_size, page_rows, prefetch, read_path
):
    table = id_table.head(num_rows)
    loader = dh_tf.TableLoader(table, "Id", "X", batch_size=batch_size, page_rows=page_rows, prefetch=prefetch,
                               read_path=read_path)
    ids, sizes = ids_and_sizes(loader)
    assert np.array_equal(ids, np.arange(num_rows))
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1)
    assert sizes[-1] == (num_rows % batch_size or batch_size)
    assert len(loader) == len(sizes)


def test_34_rows_at_batch_16(id_table):
    table = id_table.head(34)
    assert ids_and_sizes(dh_tf.TableLoader(table, "Id", "X", batch_size=16, page_rows=20))[1] == [16, 16, 2]
    dropped = dh_tf.TableLoader(table, "Id", "X", batch_size=16, page_rows=20, drop_remainder=True)
    ids, sizes = ids_and_sizes(dropped)
    assert sizes == [16, 16] and len(dropped) == 2
    assert np.array_equal(ids, np.arange(32))


def test_zero_rows_is_an_empty_epoch(id_table):
    loader = dh_tf.TableLoader(id_table.where("Id < 0"), "Id", "X", batch_size=4)
    assert len(loader) == 0
    assert list(loader) == []
    ds = dh_tf.to_dataset(id_table.where("Id < 0"), "Id", "X", batch_size=4)
    assert ds.cardinality().numpy() == 0
    assert list(ds) == []


@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_values_and_dtypes_equal_deephaven_to_numpy(typed_table, to_numpy, read_path):
    columns = ["B", "S", "I", "L", "F", "D", "Bool"]
    loader = dh_tf.TableLoader(typed_table, columns, "I", batch_size=64, page_rows=300, read_path=read_path)
    x = np.concatenate([b[0] for b in loader])
    y = np.concatenate([b[1] for b in loader])
    assert x.dtype == np.float32 and x.shape == (1000, 7) and x.flags["C_CONTIGUOUS"]
    expected = np.stack([to_numpy(typed_table, c).astype(np.float32) for c in columns], axis=1)
    assert np.array_equal(x, expected)
    assert y.dtype == np.int32 and np.array_equal(y, to_numpy(typed_table, "I"))


@pytest.mark.parametrize("label,dtype", [("B", np.int8), ("S", np.int16), ("L", np.int64), (["B", "I"], np.int32),
                                         ("F", np.float32), ("D", np.float32), ("Bool", np.float32)])
def test_integer_labels_stay_integer_others_follow_dtype(typed_table, label, dtype):
    _, y = next(iter(dh_tf.TableLoader(typed_table, "D", label, batch_size=8)))
    assert y.dtype == dtype
    assert y.shape == ((8,) if isinstance(label, str) else (8, len(label)))


def test_dtype_and_label_dtype_options(typed_table, to_numpy):
    x, y = next(iter(dh_tf.TableLoader(typed_table, ["D", "L"], "I", batch_size=1000, dtype="float64",
                                       label_dtype="float32")))
    assert x.dtype == np.float64 and np.array_equal(x[:, 0], to_numpy(typed_table, "D"))
    assert np.array_equal(x[:, 1], to_numpy(typed_table, "L").astype(np.float64))
    assert y.dtype == np.float32


def test_dict_features_dict_labels_and_sample_weight(typed_table, to_numpy):
    loader = dh_tf.TableLoader(
        typed_table, {"num": ["D", "F"], "flag": "Bool"}, {"cls": "I", "reg": ["D"]},
        sample_weight="F", batch_size=100, page_rows=250,
    )
    batches = list(loader)
    x, y, w = batches[0]
    assert set(x) == {"num", "flag"} and set(y) == {"cls", "reg"}
    assert x["num"].shape == (100, 2) and x["flag"].shape == (100,) and y["reg"].shape == (100, 1)
    assert w.shape == (100,) and w.dtype == np.float32
    flag = np.concatenate([b[0]["flag"] for b in batches])
    assert np.array_equal(flag, to_numpy(typed_table, "Bool").astype(np.float32))
    weights = np.concatenate([b[2] for b in batches])
    assert np.array_equal(weights, to_numpy(typed_table, "F"))
    cls = np.concatenate([b[1]["cls"] for b in batches])
    assert cls.dtype == np.int32 and np.array_equal(cls, to_numpy(typed_table, "I"))


def test_features_only_yields_x_alone(typed_table):
    x = next(iter(dh_tf.TableLoader(typed_table, ["D", "F"], batch_size=10)))
    assert isinstance(x, np.ndarray) and x.shape == (10, 2)


def test_shuffle_is_a_seeded_permutation_each_epoch(make_table):
    table = make_table(300_000, "X = (double)Id")
    loader = dh_tf.TableLoader(table, "Id", "X", batch_size=1000, page_rows=131072, shuffle=True, seed=11)
    epochs = []
    for _ in range(2):
        ids, sizes = ids_and_sizes(loader)
        assert np.array_equal(np.sort(ids), np.arange(300_000))
        assert sizes[:-1] == [1000] * (len(sizes) - 1)
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    again = dh_tf.TableLoader(table, "Id", "X", batch_size=1000, page_rows=131072, shuffle=True, seed=11)
    assert np.array_equal(ids_and_sizes(again)[0], epochs[0])
    again.set_epoch(1)
    assert np.array_equal(ids_and_sizes(again)[0], epochs[1])
    assert np.mean(np.abs(np.diff(epochs[0])) == 1) < 0.01


def test_seed_none_draws_a_seed_and_reports_it(make_table):
    table = make_table(10, "X = 1.0")
    a, b = (dh_tf.TableLoader(table, "Id", shuffle=True) for _ in range(2))
    assert isinstance(a.seed, int) and a.seed != b.seed


def test_iterating_from_a_thread_without_execution_context(id_table):
    result = {}

    def run():
        try:
            result["ids"] = ids_and_sizes(dh_tf.TableLoader(id_table, "Id", "X", batch_size=64, page_rows=500))[0]
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert "error" not in result, result.get("error")
    assert np.array_equal(result["ids"], np.arange(2000))


def reader_threads_alive():
    return [t for t in threading.enumerate() if t.name.startswith(READER_THREAD_NAME)]


@pytest.mark.parametrize("reader_threads", [1, 2, 4])
def test_breaking_out_mid_epoch_stops_the_reader_threads(id_table, reader_threads):
    loader = dh_tf.TableLoader(id_table, "Id", "X", batch_size=10, page_rows=100, prefetch=2,
                               reader_threads=reader_threads)
    for i, _ in enumerate(loader):
        if i == 3:
            assert len(reader_threads_alive()) == reader_threads
            break
    assert not reader_threads_alive()


def test_to_dataset_signature_cardinality_and_reiteration(id_table):
    ds = dh_tf.to_dataset(id_table, {"id": "Id", "xs": ["X", "Id"]}, "X", batch_size=64, page_rows=500)
    x_spec, y_spec = ds.element_spec
    assert x_spec["id"].shape.as_list() == [None] and x_spec["xs"].shape.as_list() == [None, 2]
    assert x_spec["id"].dtype.name == "float32" and y_spec.dtype.name == "float32"
    assert ds.cardinality().numpy() == 32
    for _ in range(2):
        batches = list(ds)
        assert len(batches) == 32 and [len(b[1]) for b in batches[-2:]] == [64, 2000 - 31 * 64]
        assert np.array_equal(np.concatenate([b[0]["id"].numpy() for b in batches]), np.arange(2000))


def test_to_dataset_drop_remainder_gives_static_batch_shape(id_table):
    ds = dh_tf.to_dataset(id_table, ["X", "Id"], "Id", batch_size=64, drop_remainder=True, shuffle=True, seed=2)
    assert ds.element_spec[0].shape.as_list() == [64, 2]
    ids = np.concatenate([y.numpy() for _, y in ds])
    assert len(ids) == 31 * 64 and len(np.unique(ids)) == len(ids)
