"""Which rows this consumer reads in one epoch, and in what order: a pure function, the one home of it.

Page size, shuffle blocks, shards and rows skipped on resumption are all decided here, and
``len()`` / cardinality come from here (:meth:`ReadPlan.num_batches`), so no other module restates
the rule.

NOTE [ Shuffling by blocks ]
Reading random single rows is ~30x slower than reading the same number of rows in order, because
every random row can decode a different Parquet page. So a shuffled epoch permutes *blocks* of
``block_rows`` consecutive rows (>= 64K; the loader's default, 256K, matches 1 MiB data pages) with an RNG seeded by ``(seed, epoch)``, cuts that block
order into pages of ``page_rows`` rows (a page may end inside a block), reads each page's pieces in
table order, and the page reader then permutes the rows inside the page (see
:attr:`PagePlan.permutation_seed`). Every row is in exactly one page, and the order depends only on
``(seed, epoch)``.

NOTE [ Shards ]
With ``num_shards`` consumers (e.g. tf.distribute workers), each shard owns a fixed part of the
table for the whole run: shard ``k`` of ``n`` reads rows ``[k * r, (k + 1) * r)``, where
``r = num_rows // n``, every epoch; with shuffle, that part is shuffled within itself by blocks
(block order seeded by ``(seed, epoch, k)``) and rows within pages, as an unsharded table is. So
shards are disjoint, every shard has the same number of rows and therefore of batches (synchronous
training needs equal step counts), and the ``num_rows % n`` last rows of the table are never read
(at most ``n - 1`` rows). Why fixed parts, as Petastorm (``cur_shard``) and MosaicML streaming
partition per worker: a shard's epoch cache then holds only its own rows (its disk is 1/n of the
table, and n shards on one host reserve one table in all), and the cache fills in the first epoch
whatever the shuffle, so epochs 2+ of every shard are served from disk (NOTE [ Epoch cache ]). The
cost: a row never changes shard, so shuffling mixes rows within a shard only; a synchronous step
still averages gradients over a batch from every shard, i.e. over the whole table. With one shard
no row is dropped.

NOTE [ Skipped rows ]
Resuming an epoch skips the rows this consumer already received. The pages are planned exactly as
for the uninterrupted epoch; whole pages before the resume point are dropped, and the page that
holds it is read whole, permuted as usual, and its first ``skip_rows`` rows dropped, so the rows
that follow come in exactly the uninterrupted order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dh_tf.errors import ArgumentError
from dh_tf.reading import batching
from dh_tf.sources.protocol import Span


@dataclass(frozen=True)
class PagePlan:
    """The rows of one page: its spans in read order, how to permute them, how many to skip.

    ``permutation_seed`` is None for an in-order page; otherwise the page's rows are reordered by
    :func:`page_permutation`. After the permutation, the first ``skip_rows`` rows are dropped
    (NOTE [ Skipped rows ]).
    """

    spans: tuple[Span, ...]
    permutation_seed: tuple[int, ...] | None = None
    skip_rows: int = 0

    @property
    def num_rows(self) -> int:
        """Rows read for this page (before skipping)."""
        return sum(stop - start for start, stop in self.spans)

    @property
    def num_delivered(self) -> int:
        """Rows this page delivers (after skipping)."""
        return self.num_rows - self.skip_rows


@dataclass(frozen=True)
class ReadPlan:
    """The fixed settings of a loader's plan; each epoch's pages follow from them and the table size.

    Example:
        >>> ReadPlan(page_rows=4, batch_size=2).num_batches(10)
        5
    """

    page_rows: int
    batch_size: int
    drop_remainder: bool = False
    shuffle: bool = False
    seed: int = 0
    block_rows: int = 65536
    num_shards: int = 1
    shard_index: int = 0

    def shard_rows(self, num_rows: int) -> int:
        """Rows this consumer reads per epoch of a table of ``num_rows`` rows (NOTE [ Shards ])."""
        return num_rows // self.num_shards if self.num_shards > 1 else num_rows

    def shard_span(self, num_rows: int) -> Span:
        """The table positions this consumer reads, every epoch (NOTE [ Shards ])."""
        rows = self.shard_rows(num_rows)
        return self.shard_index * rows, (self.shard_index + 1) * rows

    def num_batches(self, num_rows: int) -> int:
        """Batches this consumer gets per epoch: the loader's ``len()`` and the dataset's cardinality."""
        return batching.num_batches(self.shard_rows(num_rows), self.batch_size, self.drop_remainder)

    def pages(self, num_rows: int, epoch: int, *, skip_rows: int = 0) -> list[PagePlan]:
        """This consumer's pages of epoch ``epoch``; see :func:`plan_epoch`."""
        return plan_epoch(
            num_rows,
            self.page_rows,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
            block_rows=self.block_rows,
            num_shards=self.num_shards,
            shard_index=self.shard_index,
            skip_rows=skip_rows,
        )


def plan_epoch(
    num_rows: int,
    page_rows: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    block_rows: int = 65536,
    num_shards: int = 1,
    shard_index: int = 0,
    skip_rows: int = 0,
) -> list[PagePlan]:
    """Splits this shard's rows of one epoch into pages of ``page_rows`` rows (the last may be shorter).

    Without shuffle, pages are consecutive spans in table order. With shuffle, see NOTE [ Shuffling
    by blocks ]; with shards, NOTE [ Shards ]; with ``skip_rows``, NOTE [ Skipped rows ].

    Example:
        >>> [p.spans for p in plan_epoch(10, 4)]
        [((0, 4),), ((4, 8),), ((8, 10),)]
        >>> [p.spans for p in plan_epoch(10, 4, num_shards=2, shard_index=1)]
        [((5, 9),), ((9, 10),)]

    Raises:
        ValueError: a size is not positive, num_rows or skip_rows is negative, skip_rows is more
            than the shard's rows, or shard_index is not in ``[0, num_shards)``.
    """
    if num_rows < 0:
        raise ArgumentError(f"plan_epoch: num_rows must be >= 0 (got {num_rows})")
    if page_rows < 1 or block_rows < 1:
        raise ArgumentError(f"plan_epoch: page_rows and block_rows must be >= 1 (got {page_rows}, {block_rows})")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ArgumentError(
            f"plan_epoch: shard_index must be in [0, num_shards) (got shard_index={shard_index}, "
            f"num_shards={num_shards})"
        )
    shard_rows = num_rows // num_shards if num_shards > 1 else num_rows
    if not 0 <= skip_rows <= shard_rows:
        raise ArgumentError(f"plan_epoch: skip_rows must be in [0, {shard_rows}] (got {skip_rows})")
    first = shard_index * shard_rows
    stop = first + shard_rows
    if shuffle:
        blocks = [(start, min(start + block_rows, stop)) for start in range(first, stop, block_rows)]
        # One shard keeps the original seeding, so unsharded orders are what they always were.
        rng = np.random.default_rng([seed, epoch] if num_shards == 1 else [seed, epoch, num_shards, shard_index])
        mine = [blocks[i] for i in rng.permutation(len(blocks))]
    else:
        mine = [(first, stop)] if shard_rows else []
    pages = []
    for page_index, start in enumerate(range(0, shard_rows, page_rows)):
        spans = _cut(mine, start, min(start + page_rows, shard_rows))
        if shuffle:
            # Read a page's pieces in table order (decode-cache locality); the rows are permuted
            # after reading, so this changes nothing about the delivered order's randomness.
            pages.append(PagePlan(_merge(sorted(spans)), (seed, epoch, shard_index, page_index)))
        else:
            pages.append(PagePlan(tuple(spans)))
    return _skip(pages, skip_rows)


def _cut(sequence: list[Span], lo: int, hi: int) -> list[Span]:
    """The spans covering rows ``[lo, hi)`` of the concatenation of ``sequence`` (in its order)."""
    out = []
    offset = 0
    for start, stop in sequence:
        length = stop - start
        a, b = max(lo - offset, 0), min(hi - offset, length)
        if a < b:
            out.append((start + a, start + b))
        offset += length
        if offset >= hi:
            break
    return out


def _merge(spans: list[Span]) -> tuple[Span, ...]:
    """Joins spans that touch (``[a, b)`` then ``[b, c)``) into one, keeping their order."""
    merged: list[Span] = []
    for start, stop in spans:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return tuple(merged)


def _skip(pages: list[PagePlan], skip_rows: int) -> list[PagePlan]:
    kept = []
    for page in pages:
        if skip_rows >= page.num_rows:
            skip_rows -= page.num_rows
            continue
        kept.append(PagePlan(page.spans, page.permutation_seed, skip_rows) if skip_rows else page)
        skip_rows = 0
    return kept


def page_permutation(plan: PagePlan) -> np.ndarray | None:
    """The row order inside a shuffled page (indices into the rows as read), or None if in order."""
    if plan.permutation_seed is None:
        return None
    return np.random.default_rng(list(plan.permutation_seed)).permutation(plan.num_rows)


def read_positions(plan: PagePlan) -> np.ndarray:
    """The table position of each row of the page, in read order (span after span)."""
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in plan.spans] or [np.empty(0, np.int64)])


def page_positions(plan: PagePlan) -> np.ndarray:
    """The table position of each row the page delivers, in delivery order (permuted, then skipped)."""
    positions = read_positions(plan)
    permutation = page_permutation(plan)
    positions = positions if permutation is None else positions[permutation]
    return positions[plan.skip_rows :]
