"""The package layout is the architecture: layers import only downward, no import circle, and only the
engine-facing layers (``sources/``, ``write/``) and the application edge touch Deephaven or pydeephaven."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dh_tf"

LAYERS = {"errors": 0, "checks": 0, "sources": 1, "reading": 2, "live": 3, "tf": 4, "keras": 4, "write": 5}
"""Layer of each top-level module / subpackage, bottom up; anything else (server, demo, ...) is the application edge."""
EDGE_RANK = 6
ENGINE_MODULES = ("deephaven", "jpy", "pydeephaven", "pydeephaven_ticking", "deephaven_server")
ENGINE_LAYERS = ("sources", "write")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports in functions included).

    ``from package import module`` counts as importing the module only.
    """
    modules = _modules()
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = {f"{base}.{alias.name}" for alias in node.names}
            submodules = {name for name in names if name in modules}
            found.update(submodules or {base})
            found.update(names - submodules)
    return found


def _rank(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], EDGE_RANK) if len(parts) > 1 else EDGE_RANK


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def test_layers_import_only_downward():
    upward = [
        f"{module} (layer {_rank(module)}) imports {target} (layer {_rank(target)})"
        for module, targets in _graph().items()
        if module != "dh_tf"
        for target in targets
        if target != "dh_tf" and _rank(target) > _rank(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    graph = {m: {t for t in ts if t != "dh_tf"} for m, ts in graph.items() if m != "dh_tf"}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_only_sources_and_write_touch_the_engine_or_pydeephaven():
    offenders = []
    for module, path in _modules().items():
        parts = module.split(".")
        layer = parts[1] if len(parts) > 1 else ""
        if layer in ENGINE_LAYERS or _rank(module) == EDGE_RANK:
            continue
        engine = sorted(m for m in _imports(path, module) if m.split(".")[0] in ENGINE_MODULES)
        if engine or "j_table" in path.read_text():
            offenders.append(f"{module}: {engine or 'j_table'}")
    assert not offenders, "\n".join(offenders)


def test_the_keras_layer_imports_no_tensorflow():
    """``keras/`` serves every Keras 3 backend: JAX and PyTorch users need no TensorFlow installed."""
    offenders = [f"{module}: {sorted(found)}" for module, path in _modules().items() if module.startswith("dh_tf.keras")
                 for found in [{m for m in _imports(path, module) if m.split(".")[0] == "tensorflow"
                                or m.startswith("dh_tf.tf")}] if found]
    assert not offenders, "\n".join(offenders)


def test_modules_stay_small():
    long = [f"{m}: {len(p.read_text().splitlines())} lines" for m, p in _modules().items()
            if len(p.read_text().splitlines()) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_design_map_names_every_layer_folder_and_module():
    """docs/design-map.md (moved out of the README) names each layer folder and module, one line each."""
    design_map = (PACKAGE.parent / "docs" / "design-map.md").read_text()
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(name for name, rank in LAYERS.items() if rank and (PACKAGE / name).is_dir())
    missing = [f for f in folders if f"  {f}/" not in design_map]
    assert not missing, missing
    modules = [p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and p.parent != PACKAGE]
    unnamed = [m for m in modules if m not in design_map]
    assert not unnamed, f"modules missing from the design map (docs/design-map.md): {unnamed}"


def test_no_builtin_exception_is_raised_directly():
    """Every error dh_tf raises is a dh_tf.Error (NOTE [ Errors ]); builtin bases come through multiple inheritance."""
    builtin = {"ValueError", "TypeError", "RuntimeError", "ImportError", "OSError", "KeyError", "ConnectionError"}
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in builtin:
                    found.append(f"{module}:{node.lineno} raises {name}")
    assert not found, "\n".join(found)


def test_no_comment_cites_a_file_the_repository_lacks():
    root = PACKAGE.parent
    texts = [p for d in ("dh_tf", "tests", "examples", "benchmarks", "docker") for p in (root / d).rglob("*.py")]
    texts = [p for p in texts if p != Path(__file__).resolve()]
    cited = [str(p.relative_to(root)) for p in texts if "DESIGN.md" in p.read_text() or "../shared" in p.read_text()]
    assert not cited and (root / "docs" / "design.md").exists(), cited
