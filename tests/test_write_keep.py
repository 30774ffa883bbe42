"""predict_follow's kept columns (NOTE [ Live kept columns ] in dh_tf/write/predict_follow.py): every numeric
type, Boolean and Instant kept exactly, nulls included; other types refused by name."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import test_follow
from test_follow import DEADLINE_S, assert_clean, has_listeners

from dh_tf.errors import ArgumentTypeError
from dh_tf.sources.jvm_threads import entered  # one context object, several threads
from dh_tf.write.predict_follow import KEEP_TYPES, THREAD_NAME, predict_follow

fast_update_graph = test_follow.fast_update_graph  # 10 ms update cycles
pytestmark = pytest.mark.usefixtures("fast_update_graph")

WAIT_S = 4 * DEADLINE_S
T0 = 1_700_000_000_000_000_000  # ns
KEPT = ["Id", "I8", "I16", "I32", "F32", "X", "Flag", "Ts"]


class TypedPublisher:
    """A blink table (or its append-only table) of one column per kept type; every 5th row holds nulls."""

    def __init__(self, append_only: bool = True) -> None:
        from deephaven import dtypes
        from deephaven.execution_context import get_exec_ctx
        from deephaven.stream import blink_to_append_only
        from deephaven.stream.table_publisher import table_publisher

        definition = {"Id": dtypes.int64, "I8": dtypes.byte, "I16": dtypes.short, "I32": dtypes.int32,
                      "F32": dtypes.float32, "X": dtypes.double, "Flag": dtypes.bool_, "Ts": dtypes.Instant,
                      "Name": dtypes.string}
        self.blink, self.publisher = table_publisher("dh_tf-test-typed", definition)
        self.table = blink_to_append_only(self.blink) if append_only else self.blink
        self.published = 0
        self._ctx = get_exec_ctx()

    def publish(self, rows: int) -> None:
        from deephaven import new_table
        from deephaven.column import (
            bool_col,
            byte_col,
            datetime_col,
            double_col,
            float_col,
            int_col,
            long_col,
            short_col,
            string_col,
        )
        ids = np.arange(self.published, self.published + rows)
        values = expected(ids)
        flags = [None if f == -1 else bool(f) for f in values["FlagN"]]
        with entered(self._ctx):
            self.publisher.add(new_table([
                long_col("Id", ids.tolist()),
                byte_col("I8", values["I8"]),
                short_col("I16", values["I16"]),
                int_col("I32", values["I32"]),
                float_col("F32", values["F32"]),
                double_col("X", values["X"]),
                bool_col("Flag", flags),
                datetime_col("Ts", values["TsN"]),
                string_col("Name", [f"n{i}" for i in ids]),
            ]))
        self.published += rows


def expected(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The published values of rows ``ids``; Flag as 1 / 0 / -1 (null), Ts as epoch nanoseconds."""
    from deephaven.constants import NULL_BYTE, NULL_FLOAT, NULL_INT, NULL_LONG, NULL_SHORT

    null = ids % 5 == 4
    return {
        "Id": ids.astype(np.int64),
        "I8": np.where(null, NULL_BYTE, ids % 100 - 50).astype(np.int8),
        "I16": np.where(null, NULL_SHORT, ids * 7).astype(np.int16),
        "I32": np.where(null, NULL_INT, -ids * 1000).astype(np.int32),
        "F32": np.where(null, NULL_FLOAT, np.where(ids % 7 == 3, np.nan, ids / 3)).astype(np.float32),
        "X": ids / 2,
        "FlagN": np.where(null, -1, ids % 2).astype(np.int32),
        "TsN": np.where(null, NULL_LONG, T0 + ids * 1_000_003).astype(np.int64),
    }


def wait_rows(table, rows: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while table.size < rows:
        assert time.monotonic() < deadline, f"only {table.size} of {rows} predictions arrived"
        time.sleep(0.005)


def comparable(table):
    """The kept columns as numpy, Boolean and Instant as numbers (null: -1 / NULL_LONG)."""
    from deephaven.numpy import to_numpy

    view = table.view(["Id", "I8", "I16", "I32", "F32", "X", "FlagN = isNull(Flag) ? (int)-1 : (Flag ? 1 : 0)",
                       "TsN = epochNanos(Ts)"])
    return {c.name: to_numpy(view, [c.name])[:, 0] for c in view.columns}


@pytest.mark.parametrize("append_only", [True, False], ids=["append-only", "blink"])
def test_every_keep_type_is_kept_exactly_with_nulls(append_only):
    source = TypedPublisher(append_only)
    table = source.table
    # X is a feature and a kept column: read twice, the kept copy with its nulls kept.
    with predict_follow(lambda x: x[:, 0] * 2, table, ["X"], keep=KEPT, batch_size=16, max_wait=0.2) as live:
        source.publish(23)
        source.publish(14)
        wait_rows(live.table, 37)
        result = live.table.snapshot()
        assert has_listeners(table)
    assert {c.name: c.data_type.j_name for c in result.columns} == {
        "Id": "long", "I8": "byte", "I16": "short", "I32": "int", "F32": "float", "X": "double",
        "Flag": "java.lang.Boolean", "Ts": "java.time.Instant", "Prediction": "float"}
    got = comparable(result)
    for name, values in expected(np.arange(37)).items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert result.where("isNull(Ts)").size == result.where("isNull(Flag)").size == 7
    assert result.where("isNull(I32)").size == result.where("isNull(F32)").size == 7
    assert result.where("isNaN(F32)").size > 0  # NaN stays NaN, not null
    assert not has_listeners(table)  # the view reading Instant / shared columns was released
    assert [t for t in threading.enumerate() if t.name == THREAD_NAME] == []
    assert_clean(source.table)


def test_other_keep_types_are_refused_by_name():
    source = TypedPublisher()
    allowed = ", ".join(KEEP_TYPES)
    with pytest.raises(ArgumentTypeError, match=rf"predict_follow: keep column 'Name' has type java.lang.String, "
                                                rf"which a live scorer cannot keep; allowed types: {allowed}"):
        predict_follow(abs, source.table, ["X"], keep=["Id", "Name"])
    assert not has_listeners(source.table)
