"""Every reference in dh_tf's docstrings resolves, and every module imports without a JVM.

A docstring may cite a dotted name (``dh_tf.reading.plan.ReadPlan``, ``:class:`~dh_tf.errors.UsageError```),
a file (``tests/test_resume.py``, ``reading/plan.py``, ``docs/design.md``) or a design note
(``NOTE [ Shards ] in reading/plan.py``, or just ``NOTE [ Shards ]``). A dotted name must import
and its attributes exist; a file must exist at the repository root, under ``dh_tf/``, beside the
citing module or in an installed package (``keras/src/...``); a note must be defined (a line that starts with ``NOTE [ Title ]``, then ends or goes on with a colon or a
parenthesis, in a docstring or a comment) in the file named, or anywhere in ``dh_tf/`` and ``docs/`` when no file is named.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

import dh_tf

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dh_tf"
MODULES = sorted(m.name for m in pkgutil.walk_packages(dh_tf.__path__, "dh_tf."))

NAME = re.compile(r"(?<![\w.])(dh_tf(?:\.\w+)+)")
PATH = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.(?:py|md))\b")
NOTE = re.compile(r"NOTE \[ ([^\]]+?) \](?:,? in `{0,2}((?:[\w-]+/)*[\w-]+\.(?:py|md)))?")
DEFINITION = re.compile(r"^\s*(?:#\s*)?NOTE \[ ([^\]]+?) \](?::|\s*$|\s+\()", re.MULTILINE)
NOT_REFERENCES = {"report.md", "script.py"}
"""Names of files a function writes (``demo.py``'s report) or a user runs, not files of this repository."""


def module_path(name: str) -> Path:
    module = importlib.import_module(name)
    return Path(module.__file__).resolve()


def docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each docstring in ``path``: modules, classes, functions and attributes (a string after them)."""
    bodies = [node.body for node in ast.walk(ast.parse(path.read_text())) if isinstance(getattr(node, "body", None), list)]
    return [
        (statement.lineno, statement.value.value)
        for body in bodies
        for statement in body
        if isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    ]


@cache
def defined_notes(path: Path) -> frozenset[str]:
    return frozenset(" ".join(title.split()) for title in DEFINITION.findall(path.read_text()))


@cache
def all_notes() -> frozenset[str]:
    files = [*PACKAGE.rglob("*.py"), *(REPO / "docs").rglob("*.md")]
    return frozenset().union(*(defined_notes(f) for f in files))


def resolve_name(dotted: str) -> str | None:
    """None if ``dotted`` is a module or an attribute chain from one, else why not."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for index, attribute in enumerate(parts[split:], start=split):
            if not hasattr(obj, attribute):
                return f"{'.'.join(parts[:index])} has no attribute {attribute!r}"
            obj = getattr(obj, attribute)
        return None
    return "no such module"


def resolve_file(cited: str, citing: Path) -> Path | None:
    """The file ``cited`` names: in this repository, or in an installed package (``keras/src/...``)."""
    bases = [REPO, PACKAGE, citing.parent]
    top = cited.split("/")[0]
    spec = importlib.util.find_spec(top) if "/" in cited and top.isidentifier() else None
    if spec is not None and spec.origin is not None:  # a regular package, not a folder of this repository
        bases.append(Path(spec.origin).parent.parent)
    return next((base / cited for base in bases if (base / cited).is_file()), None)


def broken_references(path: Path, where: str) -> list[str]:
    """Each reference in the docstrings of ``path`` that does not resolve, as ``where:line: reference: why``."""
    broken = []
    for line, text in docstrings(path):
        for dotted in NAME.findall(text):
            why = resolve_name(dotted)
            if why is not None:
                broken.append(f"{where}:{line}: {dotted}: {why}")
        broken.extend(
            f"{where}:{line}: {cited}: no such file (at the root, under dh_tf/, beside it or in an installed package)"
            for cited in PATH.findall(text)
            if cited not in NOT_REFERENCES and resolve_file(cited, path) is None
        )
        for title, cited in NOTE.findall(" ".join(text.split())):
            if cited:
                target = resolve_file(cited, path)
                if target is not None and title not in defined_notes(target):
                    broken.append(f"{where}:{line}: NOTE [ {title} ] in {cited}: not defined there")
            elif title not in all_notes():
                broken.append(f"{where}:{line}: NOTE [ {title} ]: not defined in dh_tf/ or docs/")
    return broken


def test_every_module_imports_without_a_jvm():
    """What the references are resolved against; ``conftest.server`` is not used here, so no JVM runs."""
    assert len(MODULES) > 40
    for name in MODULES:
        importlib.import_module(name)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_references_resolve(name):
    path = module_path(name)
    broken = broken_references(path, str(path.relative_to(REPO)))
    assert not broken, "\n".join(broken)


def test_the_checks_find_broken_references(tmp_path):
    """The checks themselves: a stale name, a missing file, a note cited in the wrong file, an unknown note."""
    module = PACKAGE / "reading" / "stale_refs_probe.py"
    assert resolve_name("dh_tf.reading.plan.ReadPlan.num_batches") is None
    assert resolve_name("dh_tf.loader.TableLoader") == "dh_tf has no attribute 'loader'"
    assert resolve_name("dh_tf.reading.plan.Plan") == "dh_tf.reading.plan has no attribute 'Plan'"
    assert resolve_file("reading/plan.py", module) == PACKAGE / "reading" / "plan.py"
    assert resolve_file("plan.py", module) == PACKAGE / "reading" / "plan.py"  # beside the citing module
    assert resolve_file("tests/testengine_read.py", module) is None
    assert "Shards" in defined_notes(PACKAGE / "reading" / "plan.py")
    assert "Shards" not in defined_notes(PACKAGE / "reading" / "state.py")  # cited there, not defined
    probe = tmp_path / "probe.py"
    probe.write_text('"""See :class:`~dh_tf.columns.Field`, tests/testengine_read.py,\nNOTE [ Shards ] in\n'
                     'reading/state.py and NOTE [ No such note ]."""\n')
    assert broken_references(probe, "probe.py") == [
        "probe.py:1: dh_tf.columns.Field: dh_tf has no attribute 'columns'",
        "probe.py:1: tests/testengine_read.py: no such file (at the root, under dh_tf/, beside it or in an installed "
        "package)",
        "probe.py:1: NOTE [ Shards ] in reading/state.py: not defined there",
        "probe.py:1: NOTE [ No such note ]: not defined in dh_tf/ or docs/",
    ]

