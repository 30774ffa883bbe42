"""Batch ``i`` of a loader's epoch, served in order: what ``to_py_dataset``'s ``keras.utils.PyDataset`` asks.

NOTE [ PyDataset epochs ]
Keras reads a ``keras.utils.PyDataset`` by index: each Keras epoch asks for batches ``0 .. len - 1``.
:class:`EpochBatches` serves them from one pass of the loader's epoch, in order, so each page is read
once per epoch and the rows come in dh_tf's order (``shuffle``/``seed``: a function of
``(seed, epoch)``). The rules:

- Index ``cursor`` (the one after the last served) is the next batch of the pass. Index 0 starts a
  pass; any other index is *out of order* and raises :class:`~dh_tf.errors.UsageError` (what Keras'
  ``fit(shuffle=True)``, its default, would ask: random batch indices; dh_tf shuffles rows itself).
- An epoch counts (the loader moves on to the next) when its last batch was served in a pass that was
  not a peek. Keras peeks before it trains: the JAX and PyTorch trainers build the model from batch 0
  (two batches with JAX's one-batch-ahead on an accelerator), the TensorFlow one reads batches 0 and 1
  for the tensor spec, and under a ``tf.distribute`` strategy it builds from a fresh iterator whose
  read-ahead can reach the end of a small epoch. So an index 0 that comes before the pass served more
  than :data:`REPLAY_BATCHES` batches replays the ones kept (no page is read again) and continues the
  same pass; a peek that read further (``peek=True`` at :meth:`EpochBatches.begin`, which Keras' build
  frame tells) reads the same epoch again in the next pass. An epoch interrupted mid-way (an exception,
  ``stop_training``) is read again from its first batch by the next pass: a pass is an epoch only once
  it has been served whole.
- The epoch read is the loader's next one when the pass starts (``loader.set_epoch``, ``SyncEpochs``,
  ``load_state_dict`` of a state saved at an epoch's end). ``loader.state_dict()`` mid-epoch is the
  start of that epoch. A resume point in the middle of an epoch is refused: Keras keeps a PyDataset's
  length for every epoch of a ``fit``, so a shorter rest-of-epoch would cut the later epochs short.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError
from dh_tf.reading.loader import TableLoader

REPLAY_BATCHES = 2
"""Batches kept from the start of a pass for a Keras peek's restart (NOTE [ PyDataset epochs ])."""


@dataclass
class _Pass:
    """One pass over epoch ``epoch``: ``served`` batches taken from ``batches``, ``cursor`` the next index."""

    epoch: int
    batches: Iterator[Any]
    num_batches: int
    peek: bool
    served: int = 0
    cursor: int = 0
    kept: list[Any] = field(default_factory=list)  # the first batches, while served <= REPLAY_BATCHES
    counted: bool = False  # the loader's epoch moved on past this one


class EpochBatches:
    """Serves batch ``i`` of the loader's current epoch, in order (NOTE [ PyDataset epochs ]).

    Args:
        loader: a :class:`~dh_tf.TableLoader` of a static table.
        where: the public name to blame in errors (``to_py_dataset``).

    Thread-safe: Keras may call from a tf.data thread while its main thread ends an epoch.
    """

    def __init__(self, loader: TableLoader, where: str) -> None:
        self.loader = loader
        self._where = where
        self._lock = threading.Lock()
        self._pass: _Pass | None = None
        self._peeking = False

    def __len__(self) -> int:
        """Batches per epoch: the loader's (its plan's, exact)."""
        return len(self.loader)

    def begin(self, *, peek: bool = False) -> None:
        """Keras begins an epoch; ``peek`` when that is its first-batch build, which must not count."""
        with self._lock:
            self._peeking = peek

    def end(self) -> None:
        """Keras ends an epoch (or drops a peek's iterator): what counts was decided as batches were served."""
        with self._lock:
            self._peeking = False

    def batch(self, index: int) -> Any:
        """Batch ``index`` of the current epoch: ``x``, ``(x, y)`` or ``(x, y, w)`` numpy arrays.

        Raises:
            ArgumentTypeError, ArgumentError: ``index`` is not an int in ``[0, len)``.
            UsageError: ``index`` is out of order (neither the next batch nor 0), or the loader holds a
                resume point in the middle of its next epoch (NOTE [ PyDataset epochs ]).
        """
        with self._lock:
            num_batches = len(self)
            if isinstance(index, bool) or not isinstance(index, int):
                raise ArgumentTypeError(
                    f"{self._where}: a batch index must be an int (got {index!r} of type {type(index).__name__})"
                )
            if not 0 <= index < num_batches:
                raise ArgumentError(
                    f"{self._where}: batch index {index} is out of range: an epoch has {num_batches} batches"
                )
            current = self._pass
            if current is None or index != current.cursor or current.cursor == current.num_batches:
                current = self._restart(index, num_batches)
            if current.cursor < current.served:
                batch = current.kept[current.cursor]
            else:
                batch = next(current.batches)
                current.served += 1
                if current.served <= REPLAY_BATCHES:
                    current.kept.append(batch)
                else:
                    current.kept.clear()  # past any peek: hold no batch that Keras may own now
            current.cursor += 1
            if current.cursor == current.num_batches:
                self._finish(current)
            return batch

    def close(self) -> None:
        """Stops the pass in progress (its reader threads). Safe to call twice."""
        with self._lock:
            self._close_pass()

    def _restart(self, index: int, num_batches: int) -> _Pass:
        """Starts (or, after a peek, replays) a pass at batch 0; refuses any other index."""
        current = self._pass
        if index != 0:
            expected = 0 if current is None or current.cursor == current.num_batches else current.cursor
            raise UsageError(
                f"{self._where}: Keras asked for batch {index} where batch {expected} comes next; this PyDataset "
                "serves each epoch's batches in order, reading each page once. Keras' fit shuffles a PyDataset's "
                "batch indices unless told not to: call model.fit(..., shuffle=False), and let dh_tf shuffle the "
                "rows with dh_tf.to_py_dataset(..., shuffle=True, seed=...)"
            )
        epoch, skip_batches = self.loader.begin_epoch(peek=True)  # which epoch comes next; changes nothing
        if skip_batches:
            raise UsageError(
                f"{self._where}: the loader holds a resume point at batch {skip_batches} of epoch {epoch}, but a "
                "PyDataset resumes at epoch boundaries only (Keras keeps its length for every epoch of a fit, "
                "so a shorter rest of the epoch would cut the later ones short); load a state saved at an "
                "epoch's end (loader.state_dict() between epochs), or resume mid-epoch with dh_tf.to_dataset "
                "and dh_tf.ResumableTraining"
            )
        if (
            current is not None
            and current.epoch == epoch
            and not current.counted
            and current.served <= REPLAY_BATCHES
            and current.num_batches == num_batches
        ):
            current.cursor, current.peek = 0, self._peeking  # NOTE [ PyDataset epochs ]: a peek's batches again
            return current
        self._close_pass()
        self._pass = _Pass(epoch, self._read(), num_batches, peek=self._peeking)
        return self._pass

    def _read(self) -> Iterator[Any]:
        """The next epoch's batches, cut from the loader's groups (the pass counts itself: :meth:`_finish`)."""
        batch_size = self.loader.batch_size
        with contextlib.closing(self.loader.iter_groups(peek=True)) as groups:
            for group in groups:
                rows = len(_first_array(group))
                for start in range(0, rows, batch_size):
                    yield _rows(group, start, start + batch_size)

    def _finish(self, current: _Pass) -> None:
        """The pass served its last batch: unless it was a peek, its epoch counts and the loader moves on."""
        if current.peek:
            return
        epoch, _ = self.loader.begin_epoch()
        self.loader.end_epoch(epoch)
        current.counted = True  # it stays: its cursor is at the end, so the next index 0 starts the next epoch
        _stop(current)

    def _close_pass(self) -> None:
        current, self._pass = self._pass, None
        if current is not None:
            _stop(current)


def _stop(current: _Pass) -> None:
    current.batches.close()  # type: ignore[attr-defined]  # a generator: stops the loader's reader threads
    current.kept.clear()


def _first_array(data: Any) -> Any:
    while isinstance(data, (tuple, dict)):
        data = next(iter(data.values())) if isinstance(data, dict) else data[0]
    return data


def _rows(data: Any, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of every array of an assembled group (views, no copy)."""
    if isinstance(data, tuple):
        return tuple(_rows(part, start, stop) for part in data)
    if isinstance(data, dict):
        return {key: _rows(part, start, stop) for key, part in data.items()}
    return data[start:stop]
