"""The docs site (docs/, mkdocs.yml) tells the truth: its Python code blocks run, every public name has a
reference entry, and the site's copy of the README's example is the README's.

Every ```python block under docs/ runs, page after page, in ONE subprocess (one JVM, like a user who
pastes a page into one Python session): each page in a fresh namespace, its blocks in order. A block that
cannot run here (it needs a remote server, several workers, the IDE's globals) is preceded by the line
``<!-- not run: <the reason> -->``; the test honours it and counts it. ``make docs`` / ``make test`` build
the site with ``mkdocs build --strict``, which fails on a broken link or reference.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_python

DOCS = REPO / "docs"
NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>.*\S.*) -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: the page, the line of its first code line, its code, why it is not run."""

    page: str
    line: int
    code: str
    not_run: str | None


def code_blocks(path: Path, root: Path = REPO) -> list[Block]:
    """The ```python blocks of a Markdown file, each with the reason of a ``<!-- not run: ... -->`` above it."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence or not fence["lang"]:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence["lang"] == "python":
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.match(above.strip())
            blocks.append(Block(str(path.relative_to(root)), i + 2, "\n".join(lines[i + 1:end]) + "\n",
                                marker["reason"] if marker else None))
        i = end + 1
    return blocks


def docs_blocks() -> list[Block]:
    return [block for page in sorted(DOCS.rglob("*.md")) for block in code_blocks(page)]


RUNNER = """
import json, os, sys
pages = json.load(open(sys.argv[1]))
for page, blocks in pages:
    namespace = {"__name__": "__main__"}
    for line, code in blocks:
        try:
            exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
        except BaseException:
            print(f"DOCS BLOCK FAILED {page}:{line}", flush=True)
            raise
    print(f"DOCS PAGE OK {page} {len(blocks)}", flush=True)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # an embedded JVM can crash in finalizers at exit (see pytest_unconfigure in conftest.py)
"""


def test_code_blocks_are_found_and_not_run_markers_carry_a_reason(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- not run: needs a remote server -->\n```python\n"
                    "y = 2\n```\n\n```bash\nmake docs\n```\n<!-- not run -->\n```python\nz = 3\n```\n")
    assert code_blocks(page, tmp_path) == [
        Block("page.md", 4, "x = 1\n", None),
        Block("page.md", 9, "y = 2\n", "needs a remote server"),
        Block("page.md", 17, "z = 3\n", None),  # a marker without a reason does not count
    ]


def test_every_not_run_marker_precedes_a_python_block():
    """A marker that does not sit right above a Python block (a typo, a moved block) would silently do nothing."""
    markers = [(page, n) for page in DOCS.rglob("*.md") for n, line in enumerate(page.read_text().splitlines(), 1)
               if line.startswith("<!-- not run")]
    marked = {(REPO / block.page, block.line) for block in docs_blocks() if block.not_run}
    lonely = [f"{page.relative_to(REPO)}:{n}" for page, n in markers
              if not any(p == page and n < line <= n + 3 for p, line in marked)]
    assert not lonely, lonely


@pytest.mark.slow
def test_the_docs_code_blocks_run(tmp_path):
    blocks = docs_blocks()
    skipped = [b for b in blocks if b.not_run]
    pages: dict[str, list[tuple[int, str]]] = {}
    for block in blocks:
        if not block.not_run:
            pages.setdefault(block.page, []).append((block.line, block.code))
    assert len(pages) >= 8 and sum(map(len, pages.values())) >= 25, pages.keys()
    print(f"{sum(map(len, pages.values()))} blocks run on {len(pages)} pages; {len(skipped)} not run:")
    for block in skipped:
        print(f"  {block.page}:{block.line}: {block.not_run}")
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps(list(pages.items())))
    result = run_python(RUNNER, str(spec), timeout=600, cwd=tmp_path)  # cwd: files the pages write land here
    done = re.findall(r"^DOCS PAGE OK (\S+) (\d+)$", result.stdout, re.MULTILINE)
    assert result.returncode == 0 and done == [(page, str(len(b))) for page, b in pages.items()], (
        f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def public_names() -> list[str]:
    """``dh_tf.__all__``, read from the source (the docs need no JVM and no TensorFlow)."""
    tree = ast.parse((REPO / "dh_tf" / "__init__.py").read_text())
    (names,) = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(target, "id", None) == "__all__" for target in node.targets)]
    return names


def test_every_public_name_has_a_reference_entry():
    reference = (DOCS / "reference.md").read_text()
    entries = set(re.findall(r"^::: dh_tf\.(\w+)$", reference, re.MULTILINE))
    missing = [name for name in public_names() if name != "__version__" and name not in entries]
    assert not missing, f"public names without a '::: dh_tf.<name>' entry in docs/reference.md: {missing}"
    assert "__version__" in reference


def test_the_site_home_page_shows_the_readme_example():
    (readme_example,) = [b for b in code_blocks(REPO / "README.md") if b.not_run is None]
    (home_example,) = code_blocks(DOCS / "index.md")
    assert home_example.code == readme_example.code, "docs/index.md's example differs from the README's"
    assert home_example.not_run == "the README's example, which tests/test_readme.py runs"


SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
CALL = re.compile(r"^(?:dh_tf\.)?(?P<name>(?:server\.)?\w+)\((?P<args>.*)\)$", re.DOTALL)
BARE_STAR = re.compile(r"(^|,)\s*\*\s*(?=,|$)")


def documented_calls() -> list[tuple[str, str, str]]:
    """``(file, name, args)`` of each code span in the README and docs/ that calls a public dh_tf name."""
    public = set(public_names()) | {"server.start_server", "server.ensure_server", "start_server", "ensure_server"}
    found = []
    for path in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)  # spans, not blocks
        for span in SPAN.findall(text):
            call = CALL.match(" ".join(span.split()))
            if call and call["name"] in public:
                found.append((str(path.relative_to(REPO)), call["name"], call["args"]))
    return found


def written_parameters(args: str) -> tuple[list[str], dict[str, ast.expr]] | None:
    """The positional arguments (as source) and keywords of a call or signature as the docs write it.

    ``*`` (keyword-only marker) and ``...`` (the rest) are dropped; None if it does not parse (``every=``).
    """
    source = BARE_STAR.sub(r"\1", args).replace("...", "")
    source = re.sub(r",\s*(?=,|$)", "", source).strip(", ")
    try:
        call = ast.parse(f"f({source})", mode="eval").body
    except SyntaxError:
        return None
    assert isinstance(call, ast.Call)
    return [ast.unparse(arg) for arg in call.args], {kw.arg: kw.value for kw in call.keywords if kw.arg}


def span_errors(name: str, args: str) -> tuple[list[str], bool] | None:
    """What is wrong with a span ``name(args)`` against the real signature, and whether it is a signature.

    Every keyword the span writes must be a parameter of the function (or class). A span whose
    positional arguments are the real positional parameters' names, all of them (or a prefix, followed by
    the keyword-only marker ``*``), is a signature: its ``name=value`` pairs claim defaults, which must be
    the real ones. None: not a checkable span (it does not parse, or names no callable).
    """
    import inspect

    import dh_tf
    import dh_tf.server

    short = name.removeprefix("server.")
    target = getattr(dh_tf.server, short) if short in ("start_server", "ensure_server") else getattr(dh_tf, name)
    written = written_parameters(args)
    if written is None or not callable(target):
        return None
    positional, keywords = written
    signature = inspect.signature(target)
    parameters = signature.parameters
    leading = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    errors = [f"{name}({args}): no parameter {k!r} in {name}{signature}" for k in keywords
              if k not in parameters and not takes_any]
    is_signature = bool(positional) and (positional == leading or (
        BARE_STAR.search(args) is not None and positional == leading[: len(positional)]))
    if is_signature:
        for key, value in keywords.items():
            try:
                claimed = ast.literal_eval(value)
            except ValueError:
                continue  # a name (DEFAULT_PREFETCH): not checked
            if key in parameters and parameters[key].default != claimed:
                errors.append(f"{name}(... {key}={ast.unparse(value)}): the default is {parameters[key].default!r}")
    return errors, is_signature


def test_a_wrong_signature_in_the_docs_is_caught():
    """The README of 0.2 wrote follow's signature with a batch_size and max_wait that were not its defaults."""
    errors, is_signature = span_errors("follow", "table, features, label, batch_size=256, max_wait=1.0")
    assert is_signature and errors == ["follow(... batch_size=256): the default is 32",
                                       "follow(... max_wait=1.0): the default is None"]
    errors, is_signature = span_errors("to_dataset", 't, ["A"], "Y", batchsize=64')
    assert not is_signature and errors[0].startswith("to_dataset(t, [\"A\"], \"Y\", batchsize=64): no parameter 'batchsize'")
    assert span_errors("predict_table", "model, table, features, *, keep=None, batch_size=4096, ...") == ([], True)


def test_signatures_written_in_the_docs_match_the_code():
    """Every span like ``dh_tf.to_dataset(table, features, label=None, *, batch_size=32, ...)`` tells the truth."""
    wrong, signatures, calls = [], 0, 0
    for where, name, args in documented_calls():
        checked = span_errors(name, args)
        if checked is None:
            continue
        errors, is_signature = checked
        wrong += [f"{where}: {error}" for error in errors]
        calls += 1
        signatures += is_signature
    assert not wrong, "\n".join(wrong)
    assert signatures >= 5 and calls >= 20, (signatures, calls)
