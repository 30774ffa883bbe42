"""The one output spec of every writer: which result columns a model's outputs fill, with which types.

``predict_table`` and ``predict_follow`` take the same ``output=`` (one name, a list of names for an
``[n, k]`` output, or a dict of model output name -> one of those for a multi-output model) and the
same ``keep=``; both check them here, before any data moves, with the same messages, and both turn
a model's outputs into the same 1-D result columns (:meth:`Outputs.columns`).

NOTE [ Output column types ]
A result column's type follows the model's output dtype (:func:`column_dtype`): float32 -> float,
float64 -> double (float16 / bfloat16 -> float), int8/16/32/64 -> byte/short/int/long, unsigned ->
the next wider signed type, bool -> byte 0/1. A NaN prediction stays NaN; an integer prediction
equal to Deephaven's null sentinel reads as null. The dtypes are fixed by the first scored group
(or the empty probe of a live scorer) and later groups are cast to them.

NOTE [ Numbered outputs ]
One column name (the default, ``"Prediction"``) for a model of several outputs names one column per
output by numbering it in the model's output order: ``Prediction0``, ``Prediction1``, ... (Keras
models: ``model.output_names``' order; a callable: its list's order or its dict's key order). Each
output must then have one column (``[n]`` or ``[n, 1]``); for wider ones, name the columns with a
dict. The numbers are fixed by the first outputs matched (a Keras model's symbolic outputs, before
any data moves; a callable's first group), and ``keep`` is checked against the numbered names then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.write.publisher import column_name_error

DEFAULT_OUTPUT = "Prediction"
"""The result column of a one-column output; numbered for several outputs (NOTE [ Numbered outputs ])."""

#: What ``output`` names: one column, a list of columns (``[n, k]`` outputs), or a dict of model
#: output name -> one of those (multi-output models).
OutputSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class Target:
    """Which model output fills which columns: ``key`` None (the only output), a dict key, or a list index."""

    key: str | int | None
    columns: tuple[str, ...]

    def describe(self) -> str:
        return "the model's output" if self.key is None else f"model output {self.key!r}"


class Outputs:
    """A checked ``output=`` spec: the targets, the result column names, and how outputs become columns.

    Raises (in ``__init__``):
        ArgumentTypeError: ``output`` is not a name, a non-empty list of names, or a dict of those.
        ArgumentError: an empty dict, a name given twice, or a name that is not a valid Deephaven
            column name.
    """

    def __init__(self, output: Any, where: str) -> None:
        self.where = where
        self.targets = _parse(output, where)
        self._numbered = self.targets[0].key is None and len(self.targets[0].columns) == 1
        self._hint = ""  # after numbering: how to name a wider output
        self._keep: list[str] = []
        self._set_names()

    def _set_names(self) -> None:
        where = self.where
        self.names = [c for target in self.targets for c in target.columns]
        duplicated = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicated:
            raise ArgumentError(f"{where}: output must name each column once (got {duplicated} twice)")
        for name in self.names:
            error = column_name_error(name)
            if error is not None:
                raise ArgumentError(f"{where}: output must name valid Deephaven columns (got {name!r}: {error})")

    def match(self, outputs: Any, *, static: bool = False) -> list[tuple[Target, Any]]:
        """Pairs each target with its output (array or Keras tensor), checking count, names and widths.

        ``static``: Keras symbolic outputs, whose widths may be unknown (then not checked).

        Raises:
            ArgumentError: ``output`` does not fit the model's outputs (the message says how).
        """
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        if self._numbered and isinstance(outputs, Mapping) and len(outputs) == 1:
            outputs = next(iter(outputs.values()))  # one named output: the one name as it is
        if self._numbered and isinstance(outputs, (Mapping, list, tuple)):
            self._number(list(outputs) if isinstance(outputs, Mapping) else list(range(len(outputs))))
        targets, where = self.targets, self.where
        single = targets[0].key is None
        if isinstance(outputs, Mapping):
            if single:
                raise ArgumentError(
                    f"{where}: output must be a dict of model output name -> column name(s) for a model with "
                    f"outputs {list(outputs)} (got {self.text()})"
                )
            keys = [str(k) for k in outputs]
            if sorted(keys) != sorted(str(t.key) for t in targets):
                raise ArgumentError(f"{where}: output must have one entry per model output {keys} (got {self.text()})")
            by_key = {str(k): v for k, v in outputs.items()}
            pairs = [(t, by_key[str(t.key)]) for t in targets]
        elif isinstance(outputs, (list, tuple)):
            if single or len(outputs) != len(targets):
                raise ArgumentError(
                    f"{where}: output must be a dict with one entry per model output, in order, for a model "
                    f"returning {len(outputs)} outputs (got {self.text()})"
                )
            pairs = list(zip(targets, outputs))
        else:
            if not single:
                raise ArgumentError(
                    f"{where}: output must be a column name or a list of names for a model with one output "
                    f"(got {self.text()})"
                )
            pairs = [(targets[0], outputs)]
        for target, value in pairs:
            shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)  # Keras tensors: None dims
            width = 1 if len(shape) == 1 else shape[1] if len(shape) == 2 else -1
            if width == -1 or (width is not None and width != len(target.columns)):
                if static and width is None:
                    continue
                expected = "[n] or [n, 1]" if len(target.columns) == 1 else f"[n, {len(target.columns)}]"
                raise ArgumentError(
                    f"{where}: output must name one column per column of {target.describe()} of shape "
                    f"{_shape_text(shape)} (got {list(target.columns)}, which needs shape {expected}){self._hint}"
                )
        return pairs

    def keep_apart(self, keep: list[str]) -> None:
        """Remembers the kept columns, so that numbered names (NOTE [ Numbered outputs ]) are checked against them."""
        self._keep = list(keep)

    def _number(self, keys: list[Any]) -> None:
        """One column per output, named by numbering the one name given (NOTE [ Numbered outputs ]).

        Raises:
            ArgumentError: a numbered name is also a kept column.
        """
        base = self.targets[0].columns[0]
        self.targets = [Target(key, (f"{base}{index}",)) for index, key in enumerate(keys)]
        self._numbered = False
        self._hint = f"; {base!r} numbered one column per output: name wider outputs' columns with a dict"
        self._set_names()
        clashes = [name for name in self.names if name in self._keep]
        if clashes:
            raise ArgumentError(
                f"{self.where}: keep must not name an output column (got {clashes}, the numbered names of output "
                f"{base!r} for the model's {len(keys)} outputs); rename the output"
            )

    def columns(self, outputs: Any, num_rows: int) -> dict[str, np.ndarray]:
        """The model's outputs as 1-D arrays, one per result column (NOTE [ Output column types ]).

        Raises:
            ArgumentError: ``output`` does not fit the outputs, or an output has another row count.
            ArgumentTypeError: an output is not numeric or boolean.
        """
        columns = {}
        for target, value in self.match(outputs):
            array = np.asarray(value)
            if array.shape[0] != num_rows:
                raise ArgumentError(
                    f"{self.where}: {target.describe()} must have one row per input row (got {array.shape[0]} rows "
                    f"for {num_rows} input rows)"
                )
            dtype = column_dtype(array.dtype, self.where)
            if array.ndim == 1:
                columns[target.columns[0]] = np.ascontiguousarray(array, dtype=dtype)
            else:
                for index, name in enumerate(target.columns):
                    columns[name] = np.ascontiguousarray(array[:, index], dtype=dtype)
        return columns

    def text(self) -> str:
        """The spec as the user wrote it, for messages."""
        if self.targets[0].key is None:
            columns = self.targets[0].columns
            return repr(columns[0]) if len(columns) == 1 else repr(list(columns))
        return repr({t.key: list(t.columns) for t in self.targets})


def _parse(output: Any, where: str) -> list[Target]:
    def columns_of(spec: Any, arg: str) -> tuple[str, ...]:
        if isinstance(spec, str):
            return (spec,)
        if isinstance(spec, Sequence) and spec and all(isinstance(c, str) for c in spec):
            return tuple(spec)
        raise ArgumentTypeError(
            f"{where}: {arg} must be a column name or a non-empty list of names (got {spec!r} of type "
            f"{type(spec).__name__})"
        )

    if isinstance(output, Mapping):
        if not output:
            raise ArgumentError(f"{where}: output must name at least one model output (got an empty dict)")
        return [Target(str(key), columns_of(spec, f"output[{key!r}]")) for key, spec in output.items()]
    return [Target(None, columns_of(output, "output"))]


def _shape_text(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join("n" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"


def column_dtype(dtype: Any, where: str) -> np.dtype:
    """The numpy dtype a model output of ``dtype`` is stored as (NOTE [ Output column types ]).

    Raises:
        ArgumentTypeError: the dtype is not numeric or boolean (or is uint64 / a float wider than 64 bits).
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize <= 8:
        return np.dtype("float32") if dtype.itemsize <= 4 else np.dtype("float64")
    if dtype.name == "bfloat16":
        return np.dtype("float32")
    if dtype.kind == "i":
        return dtype.newbyteorder("=")
    if dtype.kind == "u" and dtype.itemsize < 8:
        return np.dtype(f"int{dtype.itemsize * 16}")
    if dtype.kind == "b":
        return np.dtype("int8")
    raise ArgumentTypeError(
        f"{where}: model outputs must be numeric or boolean (got dtype {dtype}); supported: float16/32/64, "
        "int8-64, uint8-32, bool"
    )


def parse_keep(keep: Any, table_columns: list[str], output_names: list[str], where: str) -> list[str]:
    """``keep`` as a list of distinct input column names (types are the writer's business).

    Raises:
        ArgumentTypeError: not a name or a list of names.
        ArgumentError: an unknown column, or one that is also an output column.
    """
    if keep is None:
        return []
    columns = [keep] if isinstance(keep, str) else keep
    if not isinstance(columns, Sequence) or not all(isinstance(c, str) for c in columns):
        raise ArgumentTypeError(
            f"{where}: keep must be a column name or a list of names (got {keep!r} of type {type(keep).__name__})"
        )
    columns = list(dict.fromkeys(columns))
    unknown = [c for c in columns if c not in table_columns]
    if unknown:
        raise ArgumentError(
            f"{where}: keep must name columns of the table (got unknown {unknown}; the table has {table_columns})"
        )
    clashes = [c for c in columns if c in output_names]
    if clashes:
        raise ArgumentError(
            f"{where}: keep must not name an output column (got {clashes}, also in output); rename the output"
        )
    return columns
