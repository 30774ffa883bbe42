"""The reading options: TableLoader's keyword parameters, the one definition that the entry points repeat.

``to_dataset``, ``predict_table``, ``distributed_fit_dataset``, ``follow`` and ``predict_follow`` spell
their reading options out as keyword parameters, so that ``inspect.signature``, ``help()`` and IDEs show
them with their defaults; ``tests/test_signatures.py`` checks each against :data:`LOADER_OPTIONS` (names
and defaults; each function documents the ones that do not apply to it). The helpers here pass them on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dh_tf.reading.loader import TableLoader


def keyword_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only parameters of ``function`` (its ``__wrapped__`` signature), name -> default, in order."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.kind == p.KEYWORD_ONLY}


LOADER_OPTIONS: dict[str, Any] = keyword_defaults(TableLoader.__init__)
"""TableLoader's options (``batch_size`` ... ``pad_value``), name -> default."""


def pick(values: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The entries of ``values`` (e.g. a function's ``locals()``) named in ``names``, in that order."""
    return {name: values[name] for name in names if name in values}


def changed(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """The names in ``defaults`` whose value in ``values`` is not the default: the options a caller gave.

    An option passed with its default value counts as not given (it changes nothing).
    """
    return [name for name, default in defaults.items() if name in values and not _same(values[name], default)]


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # an array or an object without a plain ==
        return False
