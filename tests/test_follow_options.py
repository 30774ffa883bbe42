"""Follow mode's options: column type checks, the default page size, ``prefetch`` and its old name."""

from __future__ import annotations

import warnings

import pytest
import test_follow as base

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.live.follow import follow
from dh_tf.reading.page_size import default_page_rows, row_bytes
from dh_tf.sources.engine_read import CHUNK_ROWS

fast_update_graph = base.fast_update_graph
Publisher = base.Publisher


def test_array_column_of_an_empty_live_table_is_refused_as_a_type(fast_update_graph):
    source = Publisher(chunks=1, rows=1)  # nothing published: the table has no rows
    table = source.table.update_view("A = new double[] {X, B}")
    assert table.size == 0
    with pytest.raises(ArgumentTypeError, match=r"follow mode reads scalar columns only; array column\(s\) 'A' \(double\[\]\)"):
        follow(table, "A")
    with pytest.raises(ArgumentTypeError, match=r"follow mode reads scalar columns only; array column\(s\) 'A'"):
        follow(table, {"x": "X", "seq": "A"})


def test_default_page_rows_follow_the_one_page_size_rule(fast_update_graph):
    from deephaven import dtypes
    from deephaven.stream.table_publisher import table_publisher

    narrow = follow(Publisher(chunks=1, rows=1).table, ["X", "B"], "Id")
    assert narrow.page_rows == default_page_rows(row_bytes(narrow.layout.fields), 1, max_rows=CHUNK_ROWS) == CHUNK_ROWS
    names = [f"C{i}" for i in range(80)]
    blink, _ = table_publisher("dh_tf-test-wide", dict.fromkeys(names, dtypes.double))
    wide = follow(blink, names, dtype="float64")  # 640-byte rows: pages of 32 MiB hold fewer than 65536
    assert wide.page_rows == default_page_rows(640, 1, max_rows=CHUNK_ROWS) == 32 * 2**20 // 640
    assert follow(blink, names, page_rows=7).page_rows == 7
    with pytest.raises(ArgumentError, match=r"follow: page_rows must be an int in \[1, 65536\] \(got 0\)"):
        follow(blink, names, page_rows=0)
    with pytest.raises(ArgumentTypeError, match=r"follow: page_rows must be an int in \[1, 65536\]"):
        follow(blink, names, page_rows=2.0)


def test_prefetch_and_its_deprecated_name_queue_pages(fast_update_graph):
    table = Publisher(chunks=1, rows=1).table
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        follower = follow(table, "X", prefetch=3)
    assert follower.prefetch == 3 and follower.batch_size == 32
    assert follow(table, "X").prefetch == 4
    with pytest.warns(DeprecationWarning, match="follow: queue_pages= is renamed prefetch=; the old name goes"):
        old = follow(table, "X", queue_pages=5)
    assert old.prefetch == 5
    with pytest.warns(DeprecationWarning, match=r"Follower.queue_pages is renamed Follower.prefetch"):
        assert old.queue_pages == 5
    with pytest.raises(ArgumentError, match=r"follow: pass prefetch= only \(got both prefetch= and its old name queue_pages=\)"):
        follow(table, "X", prefetch=2, queue_pages=2)
    with pytest.raises(ArgumentError, match=r"follow: prefetch must be an int >= 1 \(got 0\)"):
        follow(table, "X", prefetch=0)
    with pytest.raises(ArgumentTypeError, match=r"follow: prefetch must be an int >= 1"):
        follow(table, "X", prefetch="4")
