"""Argument checks shared by every public entry point: one home for each rule and its message."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError

P = ParamSpec("P")
R = TypeVar("R")


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


def checked_keywords(
    where: str, *, renamed: Mapping[str, str] | None = None, refused: Mapping[str, str] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates a public function (or ``__init__``) so that its keyword arguments are checked by name.

    The function keeps its own signature (``inspect.signature``, ``help()`` and IDEs show it, through
    ``__wrapped__``); the wrapper only looks at keyword names that are not parameters:

    - a deprecated name in ``renamed`` (old -> new) is passed on as the new name, with a
      ``DeprecationWarning``, for one release; old names never appear in the signature;
    - a name in ``refused`` (name -> why it does not apply here) raises ``ArgumentError``
      ``"<where>: <name> must not be given (got <name>=<value>); <why>"``;
    - any other unknown name raises ``ArgumentTypeError`` naming ``where`` and the closest valid names
      (``difflib.get_close_matches``), where Python would raise a plain ``TypeError``.

    Args:
        where: the name the user called (``"to_dataset"``, ``"ResumableTraining"``), for messages.
        renamed: deprecated keyword name -> its current name.
        refused: keyword names of related functions that do not apply here -> the reason.

    Raises (when the decorated function is called):
        ArgumentTypeError: an unknown keyword argument.
        ArgumentError: a refused keyword, or a deprecated name together with its current name.

    Example:
        >>> @checked_keywords("fit_tables", renamed={"save_every": "every"})
        ... def fit_tables(table, *, every: int = 100): ...
        >>> fit_tables(t, evry=5)  # ArgumentTypeError: fit_tables: got an unexpected keyword argument 'evry'; did you mean 'every'?
    """
    old_names = dict(renamed or {})
    reasons = dict(refused or {})

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        parameters = inspect.signature(function).parameters.values()
        valid = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        valid_names = frozenset(valid)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not valid_names.issuperset(kwargs):
                kwargs = _checked(where, kwargs, [n for n in valid if n != "self"], old_names, reasons)  # type: ignore[assignment]
            return function(*args, **kwargs)

        return wrapper

    return decorate


def _checked(
    where: str, kwargs: dict[str, Any], valid: list[str], renamed: Mapping[str, str], refused: Mapping[str, str]
) -> dict[str, Any]:
    """``kwargs`` with deprecated names renamed; raises for refused and unknown names (see :func:`checked_keywords`)."""
    out = dict(kwargs)
    for name, value in kwargs.items():
        if name in valid:
            continue
        if name in renamed:
            new = renamed[name]
            if new in kwargs:
                raise ArgumentError(f"{where}: pass {new}= only (got both {new}= and its old name {name}=)")
            warnings.warn(f"{where}: {name}= is renamed {new}=; the old name goes in the next release",
                          DeprecationWarning, stacklevel=3)
            out[new] = out.pop(name)
        elif name in refused:
            raise ArgumentError(f"{where}: {name} must not be given (got {name}={value!r}); {refused[name]}")
        else:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
                    else f"the keyword arguments are {', '.join(valid)}")
            raise ArgumentTypeError(f"{where}: got an unexpected keyword argument {name!r}; {hint}")
    return out
