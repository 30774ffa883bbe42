"""Pages -> batches. The only place that knows the partial-batch rule.

NOTE [ Only the last batch is partial ]
Rows left over at the end of a page are carried into the next page, so every batch is exactly
``batch_size`` rows except the very last one of the epoch, which is kept unless
``drop_remainder``. To keep Python out of the per-batch path, :func:`align_groups` yields
*groups*: runs of whole batches (a multiple of ``batch_size`` rows) that are views into pages where
possible; TensorFlow then cuts them into batches in C++ (``tf/dataset.py``), and the numpy iterator
cuts them with :func:`split_batches`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from dh_tf.reading.buffers import concatenate_rows

Arrays = list  # one numpy array per field, all with the same number of rows


def num_batches(num_rows: int, batch_size: int, drop_remainder: bool) -> int:
    """The number of batches in an epoch of ``num_rows`` rows.

    Example:
        >>> num_batches(34, 16, False), num_batches(34, 16, True), num_batches(32, 16, False)
        (3, 2, 2)
    """
    return num_rows // batch_size if drop_remainder else -(-num_rows // batch_size)


def align_groups(pages: Iterable[Sequence[np.ndarray]], batch_size: int, drop_remainder: bool) -> Iterator[Arrays]:
    """Regroups pages of any sizes into groups of whole batches.

    Every group but the last has a multiple of ``batch_size`` rows; the last group (the remainder,
    fewer than ``batch_size`` rows) is yielded only when ``drop_remainder`` is False. Rows keep
    their order and none is copied except the few that straddle two pages.

    Example:
        >>> [len(g[0]) for g in align_groups([[np.arange(20)], [np.arange(14)]], 16, False)]
        [16, 16, 2]
    """
    carry: list[Sequence[np.ndarray]] = []
    carried = 0
    for page in pages:
        rows = len(page[0])
        offset = 0
        if carried:
            take = min(batch_size - carried, rows)
            carry.append([a[:take] for a in page])
            carried += take
            offset = take
            if carried < batch_size:
                continue
            yield [concatenate_rows(list(parts)) for parts in zip(*carry)]
            carry, carried = [], 0
        whole = (rows - offset) // batch_size * batch_size
        if whole:
            yield [a[offset : offset + whole] for a in page]
        if offset + whole < rows:
            carry = [[a[offset + whole :] for a in page]]
            carried = rows - offset - whole
    if carried and not drop_remainder:
        yield [concatenate_rows(list(parts)) for parts in zip(*carry)]


def split_batches(group: Sequence[np.ndarray], batch_size: int) -> Iterator[Arrays]:
    """Cuts one group into batches of ``batch_size`` rows (views; the last may be shorter)."""
    rows = len(group[0])
    for start in range(0, rows, batch_size):
        yield [a[start : start + batch_size] for a in group]
