"""A loader's resumable state: a small JSON-able dict, and the check that a state fits a loader.

NOTE [ Resuming an epoch ]
The state names an epoch and how many of its batches the consumer has *received* (counted where
batches are handed over: by ``TableLoader.__iter__``, or by the caller, e.g. Keras's step count in
:class:`dh_tf.ResumableTraining`; never the pages read ahead by reader threads or tf.data). A loader
restored from it delivers exactly the rest of that epoch, in the order the uninterrupted epoch had
(the plan skips those rows: NOTE [ Skipped rows ] in reading/plan.py), then the next epochs as an
uninterrupted run would. Loading compares only what fixes that order: batch size, remainder rule,
shuffle, shards and the table's size always; the seed, page and block sizes only with shuffle (an
unshuffled epoch is table order whatever they are), so a run with ``seed=None`` (a drawn seed)
resumes unshuffled, and a change of the default page size does not refuse an unshuffled checkpoint.
For a refreshing table, resumption reads the next epoch's snapshot: its rows may differ from the
epoch that was interrupted.

Format 2 (dh_tf 0.2) changed the order of shuffled *sharded* epochs (NOTE [ Shards ]); a format-1
state of such a run is refused, naming why; other format-1 states load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dh_tf.checks import int_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.reading.plan import ReadPlan

STATE_FORMAT = 2
"""The version of the state format; a loader reads states of formats 1..this."""
ORDER_KEYS = ("batch_size", "drop_remainder", "shuffle", "num_shards", "shard_index")
"""What fixes the order of every epoch."""
SHUFFLE_ORDER_KEYS = ("seed", "page_rows", "shuffle_block_rows")
"""What fixes the order of a shuffled epoch too."""


def make_state(plan: ReadPlan, epoch: int, batches: int, num_rows: int) -> dict[str, Any]:
    """The state of a loader with ``plan`` at batch ``batches`` of ``epoch``, over ``num_rows`` rows."""
    return {
        "format": STATE_FORMAT,
        "epoch": int(epoch),
        "batches": int(batches),
        "seed": plan.seed,
        "shuffle": plan.shuffle,
        "batch_size": plan.batch_size,
        "drop_remainder": plan.drop_remainder,
        "page_rows": plan.page_rows,
        "shuffle_block_rows": plan.block_rows,
        "num_shards": plan.num_shards,
        "shard_index": plan.shard_index,
        "num_rows": int(num_rows),
    }


def check_state(
    state: Any, plan: ReadPlan, num_rows: int, *, refreshing: bool, num_batches: int, where: str
) -> tuple[int, int]:
    """The ``(epoch, batches)`` of ``state`` once it is known to fit this loader (NOTE [ Resuming an epoch ]).

    Raises:
        ArgumentTypeError: ``state`` is not a dict.
        ArgumentError: the state is from a newer format, was made for another order (the message
            names each mismatch with both values, and for a page size how to resume anyway), or
            holds more batches than an epoch has.
    """
    if not isinstance(state, Mapping):
        raise ArgumentTypeError(f"{where}: state must be a dict from state_dict() (got {type(state).__name__})")
    version = state.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= STATE_FORMAT:
        raise ArgumentError(
            f"{where}: state format {version!r} is not one this dh_tf reads (formats 1..{STATE_FORMAT}); "
            "it was written by a newer dh_tf"
        )
    mine = make_state(plan, 0, 0, num_rows)
    if version == 1 and state.get("shuffle") and int(state.get("num_shards", 1)) > 1:
        raise ArgumentError(
            f"{where}: the state (format 1, dh_tf < 0.2) is of a shuffled, sharded run, whose shards read rows in "
            "another order than this dh_tf (each shard now keeps a fixed set of rows, NOTE [ Shards ]); restart "
            "the run, or resume it with the dh_tf that wrote it"
        )
    keys = ORDER_KEYS + (SHUFFLE_ORDER_KEYS if plan.shuffle else ())
    mismatches = [f"{key}={state.get(key)!r} (this loader: {mine[key]!r})" for key in keys if state.get(key) != mine[key]]
    if not refreshing and state.get("num_rows") != mine["num_rows"]:
        mismatches.append(f"num_rows={state.get('num_rows')!r} (this table: {mine['num_rows']!r})")
    if mismatches:
        hint = ""
        if any(m.startswith("page_rows=") for m in mismatches):
            hint = f"; pass page_rows={state.get('page_rows')!r} to the loader to resume this state"
        raise ArgumentError(f"{where}: the state was made for another loader: {', '.join(mismatches)}{hint}")
    epoch = int_arg(state.get("epoch"), "state['epoch']", where, minimum=0)
    batches = int_arg(state.get("batches"), "state['batches']", where, minimum=0)
    if batches > num_batches:
        raise ArgumentError(f"{where}: state['batches'] must be <= {num_batches} batches per epoch (got {batches})")
    return epoch, batches
