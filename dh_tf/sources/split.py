"""Train/validation/test splits made by the engine: ``split(table, [0.8, 0.2], seed=0)``.

NOTE [ Splits ]
Each part is ``table.update_view(U).where(slice of U).drop_columns(U)``: an ordinary Deephaven
table (embedded or pydeephaven) with the table's columns, filtered server-side, nothing pulled into
Python. ``U``, an integer in [0, 2**53), is SplitMix64's mix (Steele, Lea and Flood 2014) of the
row's key plus an offset, its 53 high bits; the offset is SplitMix64 of ``seed``, so two seeds give
unrelated splits. Part ``k`` keeps the rows whose ``U`` lies between the cumulative fractions before
and through ``k`` (times 2**53, integers compared exactly; the first part has no lower bound and the
last no upper one): the parts are disjoint and cover every row whatever ``U`` is, and each holds its
fraction of the rows up to sampling error (binomial: ``sqrt(n * f * (1 - f))`` rows).
The formulas use what a server's formula validator allows a remote client (pydeephaven): operators,
``isNull`` and ``java.lang.Long`` / ``java.lang.Double`` / ``hashCode()`` methods, not
``java.util.Objects`` or ``new``. The query language has no ``>>>``: ``x >>> s`` is
``Long.divideUnsigned(x, 2**s)``. Its operators take ``Long.MIN_VALUE`` as null and keep it null;
the last step is a Java method, so such a value still ends as one deterministic ``U`` (2**52) and
its row in one part (SplitMix64 meets it once in 2**64 keys). The key is:

* without ``by``: the row position ``ii``. Only for a static table: a refreshing table's positions
  shift as rows arrive, so a row would move between parts (train on one epoch's validation rows).
* with ``by``: the value of column ``by`` (integers and chars as themselves, a null as its sentinel;
  floats by their bits, ``-0.0`` taken as ``0.0``; other values by their Java ``hashCode()``, by value
  for the :data:`KEY_TYPES`, a null as 0): rows with equal keys land in the same part, so one
  entity's rows never straddle training and validation; rows of a null key all land in one part.
  Works for refreshing tables (each row's part is fixed by its key).

The same table, fractions and seed give the same parts in every process and release
(``tests/test_split.py`` recomputes SplitMix64 in numpy and checks the engine's parts row by row).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.checks import int_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.sources import open_source

INTEGER_KEY_TYPES = ("byte", "short", "int", "long", "char")
FLOAT_KEY_TYPES = ("float", "double")
HASHED_KEY_TYPES = (
    "java.lang.String", "java.lang.Boolean", "java.time.Instant", "java.time.ZonedDateTime", "java.time.LocalDate",
    "java.time.LocalTime", "java.math.BigDecimal", "java.math.BigInteger",
)
KEY_TYPES = (*INTEGER_KEY_TYPES, *FLOAT_KEY_TYPES, *HASHED_KEY_TYPES)
"""Types of a ``by`` column: the ones whose values hash by value (an array's Java hash is its identity) with
methods a server lets remote clients call."""
SUM_TOLERANCE = 1e-9


def split(table: Any, fractions: Sequence[float] | Mapping[str, float], *, seed: int = 0,
          by: str | None = None) -> tuple[Any, ...] | dict[str, Any]:
    """Splits ``table`` into disjoint parts that together hold every row, in the engine (NOTE [ Splits ]).

    The replacement for Keras' ``validation_split`` (which takes arrays only), as HF
    ``train_test_split`` and ``keras.utils.split_dataset`` are for in-memory data: each part is a
    Deephaven table (``table.where(...)``), to pass to ``to_dataset`` or anything else. The parts are
    the same for the same table, fractions and seed, in every process.

    Args:
        table: a ``deephaven.table.Table`` or ``pydeephaven.table.Table``; without ``by`` a static one.
        fractions: the parts' shares of the rows, e.g. ``[0.8, 0.2]``, or ``{"train": 0.8, "val": 0.2}``:
            2 or more numbers > 0 that sum to 1 (within 1e-9).
        seed: an int in [0, 2**63 - 1]; another seed gives an unrelated split.
        by: a key column: rows with equal keys land in the same part (every row of one user, one
            symbol, one day...), also for a refreshing table. None: rows are assigned by position.

    Returns:
        A tuple of tables in the order of ``fractions``, or a dict name -> table for a dict. Each
        part's size is its fraction of the rows up to sampling error (by rows, or by keys with ``by``).
        A pydeephaven part is an export of the caller's (``close()`` releases it).

    Raises:
        ArgumentTypeError: ``fractions`` is not a list/tuple/dict of numbers, ``seed`` not an int,
            ``by`` not a str or its column of a type that does not hash by value, ``table`` not a table.
        ArgumentError: fewer than 2 parts, a fraction <= 0 or not finite, fractions not summing to 1,
            ``seed`` out of range, no column ``by`` (the message lists the columns), a refreshing table
            without ``by``, a closed pydeephaven Session.
        RemoteReadError: the server failed to make a part (the parts made are released).

    Example:
        >>> train, val = dh_tf.split(table, [0.8, 0.2], seed=7)
        >>> parts = dh_tf.split(table, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=7, by="UserId")
        >>> model.fit(to_dataset(train, F, "Y", shuffle=True), validation_data=to_dataset(val, F, "Y"))
    """
    names, shares = _fractions(fractions)
    seed = int_arg(seed, "seed", "split", minimum=0, maximum=2**63 - 1)
    if by is not None and not isinstance(by, str):
        raise ArgumentTypeError(f"split: by must be a column name (a str) or None (got {by!r} of type {type(by).__name__})")
    source = open_source(table, "split")
    if source is table:  # open_source passes a TableSource through: not a table
        raise ArgumentTypeError(
            f"split: table must be a deephaven.table.Table or pydeephaven.table.Table (got {type(table).__name__})"
        )
    types = dict(source.column_types)
    key = "ii" if by is None else _key(by, types)
    if by is None and source.is_refreshing:
        raise ArgumentError(
            "split: a refreshing table needs by= (a key column): rows are otherwise assigned by position, and "
            "positions shift as rows arrive, so rows would move between parts; pass by='<a key column>' "
            f"(its columns: {list(types)}) or split a static snapshot (table.snapshot())"
        )
    unit = _unused_name(types)
    columns = _unit_formulas(unit, key, seed)
    added = [*_helper_columns(unit), unit]
    parts = _filters(unit, shares)
    if type(table).__module__.startswith("pydeephaven"):
        tables = _remote_parts(table, source, columns, parts, added)
    else:
        with_unit = table.update_view(columns)
        tables = [with_unit.where(filters).drop_columns(added) for filters in parts]
    return tuple(tables) if names is None else dict(zip(names, tables))


def _fractions(fractions: Any) -> tuple[list[str] | None, list[float]]:
    """``(names or None, shares)`` of a list/tuple or dict of fractions, checked (see :func:`split`)."""
    allowed = "a list/tuple of 2 or more numbers > 0 summing to 1, or a dict name -> such a number"
    if isinstance(fractions, Mapping):
        bad = [name for name in fractions if not isinstance(name, str)]
        if bad:
            raise ArgumentTypeError(f"split: fractions' names must be str (got {bad[0]!r} of type "
                                    f"{type(bad[0]).__name__}); fractions must be {allowed}")
        names: list[str] | None = list(fractions)
        values = list(fractions.values())
    elif isinstance(fractions, (list, tuple)):
        names, values = None, list(fractions)
    else:
        raise ArgumentTypeError(f"split: fractions must be {allowed} (got {fractions!r} of type {type(fractions).__name__})")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ArgumentTypeError(f"split: fractions must be {allowed} (got {value!r} of type {type(value).__name__} "
                                    f"in {fractions!r})")
    if len(values) < 2:
        raise ArgumentError(f"split: fractions must be {allowed} (got {len(values)} part(s): {fractions!r})")
    if not all(math.isfinite(value) and value > 0 for value in values):
        raise ArgumentError(f"split: fractions must be {allowed} (got {fractions!r}: each must be > 0 and finite)")
    total = math.fsum(float(value) for value in values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ArgumentError(f"split: fractions must be {allowed} (got {fractions!r}, which sum to {total!r})")
    return names, [float(value) / total for value in values]


def _key(by: str, types: Mapping[str, str]) -> str:
    """The query-language expression of column ``by``'s value as a long (NOTE [ Splits ])."""
    if by not in types:
        raise ArgumentError(f"split: by={by!r} is not a column of the table (its columns: {list(types)})")
    if types[by] in INTEGER_KEY_TYPES:
        return by
    if types[by] in FLOAT_KEY_TYPES:
        return f"java.lang.Double.doubleToLongBits({by} + 0.0)"  # + 0.0: -0.0 becomes 0.0, equal keys
    if types[by] in HASHED_KEY_TYPES:
        return f"(isNull({by}) ? 0 : {by}.hashCode())"
    raise ArgumentTypeError(
        f"split: by column {by!r} has type {types[by]}, whose values do not hash by value; "
        f"a key column must be one of {', '.join(KEY_TYPES)}"
    )


def _unused_name(types: Mapping[str, str]) -> str:
    """A name for the helper column that no column of the table has."""
    name = "DhTfSplitUnit"
    while any(column in types for column in (name, *_helper_columns(name))):
        name += "_"
    return name


def _unit_formulas(unit: str, key: str, seed: int) -> list[str]:
    """The ``update_view`` formulas that give column ``unit`` = SplitMix64(key + offset) >>> 11 (NOTE [ Splits ])."""
    # The constants stay local: the embedded ``where`` copies the caller's module globals into the query
    # scope, and a Python int beyond a Java long fails there (OverflowError).
    mask = (1 << 64) - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    offset = mix((seed + 0x9E3779B97F4A7C15) & mask)  # SplittableRandom(seed).nextLong()
    a, b, c = _helper_columns(unit)  # hex literals: any 64 bits as a Java long, Long.MIN_VALUE included
    return [
        f"{a} = java.lang.Long.sum({key}, 0x{offset:016x}L)",
        f"{b} = ({a} ^ java.lang.Long.divideUnsigned({a}, {1 << 30}L)) * 0xbf58476d1ce4e5b9L",
        f"{c} = ({b} ^ java.lang.Long.divideUnsigned({b}, {1 << 27}L)) * 0x94d049bb133111ebL",
        f"{unit} = java.lang.Long.divideUnsigned({c} ^ java.lang.Long.divideUnsigned({c}, {1 << 31}L), {1 << 11}L)",
    ]


def _helper_columns(unit: str) -> list[str]:
    """The columns :func:`_unit_formulas` adds before ``unit``, dropped from the parts with it."""
    return [f"{unit}A", f"{unit}B", f"{unit}C"]


def _filters(unit: str, shares: Sequence[float]) -> list[list[str]]:
    """Each part's filters on column ``unit`` (in [0, 2**53)): slices between cumulative shares, the ends open."""
    bounds = [round(math.fsum(shares[: k + 1]) * 2**53) for k in range(len(shares) - 1)]
    parts = []
    for k in range(len(shares)):
        lower = [f"{unit} >= {bounds[k - 1]}L"] if k > 0 else []
        upper = [f"{unit} < {bounds[k]}L"] if k < len(bounds) else []
        parts.append(lower + upper)
    return parts


def _remote_parts(table: Any, source: Any, columns: list[str], parts: Sequence[list[str]], added: list[str]) -> list[Any]:
    """The parts of a pydeephaven table, exports of the caller's; the intermediate exports are released,
    and on an error the parts made so far."""
    from dh_tf.sources.remote import release_export

    source.check_open("splitting the table")
    made: list[Any] = []
    steps: list[Any] = []
    try:
        steps.append(table.update_view(columns))
        for filters in parts:
            steps.append(steps[0].where(filters))
            made.append(steps[-1].drop_columns(added))
    except Exception as error:
        for exported in made:
            release_export(exported)
        raise source.read_error(f"making part {len(made) + 1} of {len(parts)} of the split", error) from error
    finally:
        for exported in steps:
            release_export(exported)
    return made
