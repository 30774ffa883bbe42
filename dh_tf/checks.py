"""Argument checks shared by every public entry point: one home for each rule and its message."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError


def int_arg(value: Any, name: str, where: str, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (bools are not ints).

    Raises:
        ArgumentTypeError: not an int.
        ArgumentError: out of range.
    """
    allowed = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{where}: {name} must be {allowed} (got {value!r} of type {type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        raise ArgumentError(f"{where}: {name} must be {allowed} (got {value!r})")
    return int(value)


def optional_int_arg(value: Any, name: str, where: str, *, minimum: int) -> int | None:
    """None, or ``value`` checked by :func:`int_arg`."""
    return None if value is None else int_arg(value, name, where, minimum=minimum)


def bool_arg(value: Any, name: str, where: str) -> bool:
    """``value`` as a bool.

    Raises:
        ArgumentTypeError: not True or False.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{where}: {name} must be True or False (got {value!r} of type {type(value).__name__})")
    return bool(value)


def seconds_arg(value: Any, name: str, where: str) -> float | None:
    """None, or ``value`` as a finite number of seconds >= 0.

    Raises:
        ArgumentTypeError: not a number (bools are not numbers).
        ArgumentError: negative, NaN or infinite.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(
            f"{where}: {name} must be a number of seconds >= 0 or None (got {value!r} of type {type(value).__name__})"
        )
    if not math.isfinite(value) or value < 0:
        raise ArgumentError(f"{where}: {name} must be a number of seconds >= 0 or None (got {value!r})")
    return float(value)


def choice_arg(value: Any, name: str, where: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        ArgumentError: anything else (the message lists the choices).
    """
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(f"{where}: {name} must be one of {list(choices)} (got {value!r})")
    return value


UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()
"""The default of an argument whose old, deprecated name may be given instead (:func:`renamed_arg`)."""


def renamed_arg(value: Any, old_value: Any, name: str, old_name: str, where: str, default: Any) -> Any:
    """The value of argument ``name``, given either as ``name`` or by its old name ``old_name``.

    The old name works for one release with a ``DeprecationWarning``; ``default`` when neither is given.

    Raises:
        ArgumentError: both names were given.
    """
    if old_value is UNSET:
        return default if value is UNSET else value
    if value is not UNSET:
        raise ArgumentError(f"{where}: pass {name}= only (got both {name}= and its old name {old_name}=)")
    warnings.warn(f"{where}: {old_name}= is renamed {name}=; the old name goes in the next release",
                  DeprecationWarning, stacklevel=3)
    return old_value
