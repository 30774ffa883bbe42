"""Which rows each page of an epoch holds: a pure function of (num_rows, sizes, seed, epoch).

NOTE [ Shuffling by blocks ]
Reading random single rows is ~30x slower than reading the same number of rows in order, because
every random row can decode a different Parquet page. So a shuffled epoch permutes *blocks* of
``block_rows`` consecutive rows (>= 64K), gathers several blocks into each page, and the page
reader then permutes the rows inside the page (see :attr:`PagePlan.permutation_seed`). Every row
is still in exactly one page, and the order depends only on ``(seed, epoch)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Span = tuple[int, int]
"""A half-open range of row positions ``[start, stop)``, as in ``Table.slice``."""


@dataclass(frozen=True)
class PagePlan:
    """The rows of one page: its spans in read order, and how to permute the rows after reading.

    ``permutation_seed`` is None for an in-order page; otherwise the page's rows are reordered by
    :func:`page_permutation`.
    """

    spans: tuple[Span, ...]
    permutation_seed: tuple[int, ...] | None = None

    @property
    def num_rows(self) -> int:
        return sum(stop - start for start, stop in self.spans)


def plan_epoch(
    num_rows: int,
    page_rows: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    block_rows: int = 65536,
) -> list[PagePlan]:
    """Splits ``num_rows`` rows into pages for one epoch.

    Without shuffle, pages are consecutive spans of ``page_rows`` rows in table order (the last may
    be shorter). With shuffle, see NOTE [ Shuffling by blocks ]: each page gathers
    ``max(1, page_rows // block_rows)`` blocks in a seeded random order.

    Example:
        >>> [p.spans for p in plan_epoch(10, 4)]
        [((0, 4),), ((4, 8),), ((8, 10),)]

    Raises:
        ValueError: a size is not positive, or num_rows is negative.
    """
    if num_rows < 0:
        raise ValueError(f"plan_epoch: num_rows must be >= 0 (got {num_rows})")
    if page_rows < 1 or block_rows < 1:
        raise ValueError(f"plan_epoch: page_rows and block_rows must be >= 1 (got {page_rows}, {block_rows})")
    if not shuffle:
        return [PagePlan(((start, min(start + page_rows, num_rows)),)) for start in range(0, num_rows, page_rows)]
    blocks = [(start, min(start + block_rows, num_rows)) for start in range(0, num_rows, block_rows)]
    order = np.random.default_rng([seed, epoch]).permutation(len(blocks))
    blocks_per_page = max(1, page_rows // block_rows)
    pages = []
    for page_index, first in enumerate(range(0, len(blocks), blocks_per_page)):
        # Read a page's blocks in table order (better decode-cache locality); its rows are permuted
        # after reading anyway, so this changes no delivered order's randomness.
        spans = tuple(blocks[i] for i in sorted(order[first : first + blocks_per_page]))
        pages.append(PagePlan(spans, (seed, epoch, page_index)))
    return pages


def page_permutation(plan: PagePlan) -> np.ndarray | None:
    """The row order inside a shuffled page (indices into the rows as read), or None if in order."""
    if plan.permutation_seed is None:
        return None
    return np.random.default_rng(list(plan.permutation_seed)).permutation(plan.num_rows)


def read_positions(plan: PagePlan) -> np.ndarray:
    """The table position of each row of the page, in read order (span after span)."""
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in plan.spans] or [np.empty(0, np.int64)])


def page_positions(plan: PagePlan) -> np.ndarray:
    """The table position of each row of the page, in delivery order (after the permutation)."""
    positions = read_positions(plan)
    permutation = page_permutation(plan)
    return positions if permutation is None else positions[permutation]
