"""Which null policy applies to each column's output, and what a null under ``"error"`` says to do instead.

:func:`~dh_tf.reading.layout.build_layout` checks the caller's ``nulls`` once (:func:`null_policies`), then asks
:meth:`NullPolicies.for_column` for each column of each output: the policy that applies (a global ``"nan"`` or
number only where it fits), checked against the output's dtype, and the end of the
:class:`~dh_tf.errors.NullValueError` that a null under ``"error"`` raises later (:func:`null_fix`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError
from dh_tf.sources.column_types import ColumnKind

#: A null policy: ``"error"``, ``"nan"``, or a number to fill nulls with.
NullPolicy = str | float | int

NULL_POLICIES = ("error", "nan")


@dataclass(frozen=True)
class NullPolicies:
    """The caller's checked ``nulls``: column -> policy, and whether it was one global policy (not a dict)."""

    nulls: NullPolicy | Mapping[str, NullPolicy]
    by_column: Mapping[str, NullPolicy]
    is_global: bool
    where: str

    def for_column(
        self, column: str, kind: ColumnKind, out_dtype: np.dtype, float_setting: str
    ) -> tuple[NullPolicy, str]:
        """The policy of ``column`` in an output of ``out_dtype``, and its :func:`null_fix` ("" unless ``"error"``).

        ``float_setting`` says how the caller would make this output float (``"label_dtype='float32'"``).

        Raises:
            ArgumentError: the policy does not fit the output (:func:`check_policy_fits`).
        """
        policy = self.by_column.get(column, "error")
        if self.is_global and (out_dtype.kind == "O" or policy == "nan" and out_dtype.kind != "f"):
            policy = "error"  # a global "nan" / number means: where it fits (float / numeric outputs)
        given, passed = given_policy(self.nulls, column)
        check_policy_fits(policy, column, kind, out_dtype, self.where, passed, float_setting)
        return policy, null_fix(column, kind, out_dtype, given, passed, float_setting) if policy == "error" else ""


def null_policies(
    nulls: NullPolicy | Mapping[str, NullPolicy], table_types: Mapping[str, str], where: str
) -> NullPolicies:
    """Checks ``nulls`` (one policy, or a dict column -> policy) against the table's columns.

    Raises:
        ArgumentError: the dict names a column the table lacks, or a policy is not ``"error"``, ``"nan"`` or a
            number (a dict value may also be a fill string, for String columns).
    """
    if isinstance(nulls, Mapping):
        unknown = [c for c in nulls if c not in table_types]
        if unknown:
            raise ArgumentError(
                f"{where}: nulls names unknown column(s) {unknown}; the table has columns {list(table_types)}"
            )
        by_column = {c: _check_policy(p, f"nulls[{c!r}]", where, text=True) for c, p in nulls.items()}
        return NullPolicies(nulls, by_column, False, where)
    policy = _check_policy(nulls, "nulls", where)
    return NullPolicies(nulls, dict.fromkeys(table_types, policy), True, where)


def _check_policy(policy: Any, arg: str, where: str, text: bool = False) -> NullPolicy:
    if isinstance(policy, str) and (policy in NULL_POLICIES or text):  # text: a fill string (String columns)
        return policy
    if isinstance(policy, (int, float, np.integer, np.floating)) and not isinstance(policy, bool):
        return policy
    raise ArgumentError(
        f"{where}: {arg} must be 'error', 'nan' or a number to fill nulls with "
        f"(got {policy!r} of type {type(policy).__name__})"
    )


def given_policy(nulls: NullPolicy | Mapping[str, NullPolicy], column: str) -> tuple[NullPolicy, str]:
    """The null policy the caller gave ``column``, and how the caller wrote it (``"nulls='nan'"``), for messages."""
    if not isinstance(nulls, Mapping):
        return nulls, f"nulls={nulls!r}"
    if column in nulls:
        return nulls[column], f"nulls={{{column!r}: {nulls[column]!r}}}"
    return "error", "nulls='error' (the default for a column the nulls dict does not name)"


def null_fix(
    column: str, kind: ColumnKind, out_dtype: np.dtype, given: NullPolicy, passed: str, float_setting: str
) -> str:
    """The end of the NullValueError for a null in ``column`` under ``"error"``: what was passed and what fits.

    ``given`` is the policy the caller gave the column and ``passed`` how they wrote it (:func:`given_policy`): a
    global ``"nan"`` keeps ``"error"`` for an integer output, where NaN does not exist, so the message says
    ``nulls='nan'`` was passed and offers a fill number or a float output (``float_setting``, e.g.
    ``"label_dtype='float32'"``).
    """
    if out_dtype.kind == "O":
        why = "" if given == "error" else f", which fits numeric outputs only, not String column {column!r}"
        return f"{passed}{why}; pass a fill string as nulls={{{column!r}: '[UNK]'}}"
    if out_dtype.kind == "f":
        return f"{passed}; pass nulls='nan' or a fill number (for all columns or as nulls={{{column!r}: ...}})"
    why = ", which cannot apply to it" if given == "nan" else ""
    fill = f"a fill number as nulls={{{column!r}: {-1 if out_dtype.kind == 'i' else 0}}}"
    floats = "" if kind.is_timestamp else f", or a float output, e.g. {float_setting}, with nulls='nan'"
    return f"{passed}{why}: NaN does not exist in its {out_dtype} output; pass {fill}{floats}"


def check_policy_fits(
    policy: NullPolicy, column: str, kind: ColumnKind, out_dtype: np.dtype, where: str, passed: str, float_setting: str
) -> None:
    """Raises ArgumentError unless ``policy`` fits ``column``'s output (the other arguments: :func:`null_fix`)."""
    if out_dtype.kind == "O" and (policy == "nan" or not isinstance(policy, str)):
        raise ArgumentError(
            f"{where}: nulls={{{column!r}: {policy!r}}} does not fit String column {column!r}; its nulls can be "
            f"'error' or a fill string, e.g. nulls={{{column!r}: '[UNK]'}}"
        )
    if out_dtype.kind != "O" and isinstance(policy, str) and policy not in NULL_POLICIES:
        raise ArgumentError(
            f"{where}: nulls={{{column!r}: {policy!r}}}: a fill string fits String columns only, and column "
            f"{column!r} goes to a {out_dtype} array; use 'error', 'nan' or a number"
        )
    if policy == "nan" and out_dtype.kind != "f":
        raise ArgumentError(
            f"{where}: nulls={{{column!r}: 'nan'}} needs a floating output, but column {column!r} goes to a "
            f"{out_dtype} array; use 'error' or a number for it (nulls={{{column!r}: value}})"
            + ("" if kind.is_timestamp else f", or a float output for NaN, e.g. {float_setting}")
        )
    if isinstance(policy, str):
        return
    if out_dtype.kind in "iu" and (not float(policy).is_integer() or not _fits(policy, out_dtype)):
        raise ArgumentError(
            f"{where}: the null fill value for column {column!r} must be an integer that fits "
            f"{out_dtype} (got {policy!r}), set by {passed}"
        )


def _fits(value: Any, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= int(value) <= info.max
