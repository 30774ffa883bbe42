"""The quick start and live training metrics, pasted into the Deephaven web IDE's console in a real (headless) browser.

Needs Debian's ``chromium`` (``make test`` installs it through the Makefile's ``browser`` target) and
Playwright's Python package; Playwright's own browser downloads are never used. A screenshot is
saved to ``test-artifacts/browser-quickstart.png`` (and ``browser-metrics.png`` for the live metrics
table and its plot) whether the test passes or fails.

NOTE [ Pasting into the console ]
The console input is a Monaco editor. ``page.keyboard.insert_text(code)`` goes through Monaco's
typing path, which auto-indents each new line like the one before it: a line after an indented
block gets the block's indent, and the pasted Python is no longer the same program. A paste event
(what a user's Ctrl+V delivers) inserts the text verbatim, so we dispatch one on the focused input.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, TEST_PSK

import __main__

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO / "test-artifacts" / "browser-quickstart.png"
SUCCESS = "dh_tf example OK:"
ERRORS = ".console-history .error-message"
APP_LOAD_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300
QUICKSTART_ROWS = 200_000

_PASTE = """(code) => {
    const data = new DataTransfer();
    data.setData('text/plain', code);
    document.activeElement.dispatchEvent(
        new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
}"""


def _texts(page, selector: str) -> list[str]:
    return [element.text_content() or "" for element in page.query_selector_all(selector)]


# The console also shows the server's own Java log errors ("<thread> | i.d.s.s.SessionService | ..."),
# e.g. a barrage stream of an earlier test's closed browser ending with an error: not our command's.
SERVER_LOG_LINE = re.compile(r"^\s*[\w.-]+\s+\| (?:[a-z](?:\.[a-z])+\.\w+|\.?\w+)\s*\| ")
"""A server log line's head, "<thread> | <logger> | ": the console pads and cuts both names to a width, so the logger can
be "i.d.s.s.SessionState" or ".AsyncClientErrorNotifier" (the cut end of a longer name)."""


JAVA_TRACE_LINE = re.compile(r"^\s*(at [\w$.<>/]+\(.*\)|Caused by: [\w.$]+.*|\.\.\. \d+ more|[\w$.]+\.java:\d+\))\s*$")
"""A line of a Java stack trace: the rest of a server log message that the console shows as entries of their own."""


def _is_server_log(text: str) -> bool:
    """True for a console entry that is the server's own log: one of its lines is a log line's head (an entry
    can start with the tail of the previous log message's stack trace, as in "Thread.java:840)\n<thread> | ..."),
    or every line is a Java stack trace line (the rest of such a message)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return any(SERVER_LOG_LINE.match(line) for line in lines) or bool(lines) and all(
        JAVA_TRACE_LINE.match(line) for line in lines)


def _wait_for_success(page, marker: str) -> list[str]:
    """Polls the console until a success line follows ``marker``; fails at once on an error message.

    The console also shows everything this process printed before (other tests' runs included), so
    only lines after our own marker count.
    """
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        errors = [text for text in _texts(page, ERRORS) if not _is_server_log(text)]
        logs = [line for text in _texts(page, ".console-history .log-message") for line in text.splitlines()]
        ours = logs[logs.index(marker) + 1 :] if marker in logs else []
        if errors:
            for button in page.query_selector_all(f"{ERRORS} .error-btn-link"):
                button.dispatch_event("click")  # shows the full traceback (no pointer: see _click_console_input)
            time.sleep(1)
            shown = [text for text in _texts(page, ERRORS) if not _is_server_log(text)]
            pytest.fail("the console shows an error:\n" + "\n---\n".join(text[:3000] for text in shown))
        if any(line.startswith(SUCCESS) for line in ours):
            return ours
        if time.monotonic() > deadline:
            pytest.fail(f"no {SUCCESS!r} line within {RUN_TIMEOUT_S} s; console log:\n" + "\n".join(logs[-60:]))
        time.sleep(1)


def _click_console_input(page) -> None:
    """Clicks the console input once the login overlay has faded out, and focuses its text area.

    The PSK login overlay sometimes stays in its fade-out (seen in about one run in four here) and
    takes every pointer click; the text area can still be focused without a pointer, which is all
    the paste needs.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_selector('[data-testid="auth-psk-loading"]', state="detached", timeout=20_000)
        page.click(".console-input", timeout=10_000)
    except PlaywrightTimeoutError:
        pass
    page.focus(".console-input textarea")


def _paste_into_console(page, code: str, attempts: int = 5) -> None:
    """Pastes ``code`` into the console input, pasting again only while the input stays empty.

    Seen in CI once: the paste landed before the editor was ready, and Enter ran an empty command.
    """
    for _ in range(attempts):
        _click_console_input(page)
        page.evaluate(_PASTE, code)  # NOTE [ Pasting into the console ]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if (page.inner_text(".console-input") or "").strip():
                return
            time.sleep(0.25)
    pytest.fail(f"the pasted code never showed in the console input after {attempts} attempts")


@contextlib.contextmanager
def console_output(server) -> Iterator[None]:
    """Sends this process's stdout/stderr to the console log again, as the embedded server set it up.

    ``Server`` tees ``sys.stdout``/``sys.stderr`` into its log buffer (what the console shows) when
    it starts, but pytest's capture puts its own streams back for every test phase, which drops the
    tee; so this is a context manager used inside the test body, not a fixture.
    """
    from deephaven_internal.stream import TeeStream

    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, TeeStream):  # with `pytest -s` the server's tee is still in place
        sys.stdout = TeeStream.split(sys.stdout, server.j_server.getStdout())
    if not isinstance(sys.stderr, TeeStream):
        sys.stderr = TeeStream.split(sys.stderr, server.j_server.getStderr())
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@pytest.fixture
def console_globals():
    """Restores the environment and removes the console globals the test created (the console's
    scope is this process's ``__main__``: NOTE [ Where console globals live ] in test_examples.py)."""
    env_before = dict(os.environ)
    globals_before = set(vars(__main__))
    yield
    for name in set(vars(__main__)) - globals_before:
        delattr(__main__, name)
    os.environ.clear()
    os.environ.update(env_before)


@contextlib.contextmanager
def ide_page(server, tmp_path: Path, screenshot: Path) -> Iterator[object]:
    """The web IDE in headless Chromium, logged in, with the app loaded; a screenshot on the way out."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium and chromium-driver (make browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.skip(f"the playwright Python package cannot be imported: {e}")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with console_output(server), sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        page = context.pages[0] if context.pages else context.new_page()
        try:
            page.goto(f"http://127.0.0.1:{server.test_port}/ide/?psk={TEST_PSK}")
            page.wait_for_selector('[data-testid="app-loaded"]', timeout=APP_LOAD_TIMEOUT_S * 1000)
            yield page
        finally:
            page.screenshot(path=str(screenshot))
            context.close()


def run_in_console(page, code: str) -> list[str]:
    """Pastes ``code`` after a unique marker print, presses Enter, returns the log lines after the marker."""
    marker = f"dh_tf browser run {uuid.uuid4().hex}"
    _paste_into_console(page, f"print({marker!r})\n" + code)
    page.keyboard.press("Enter")
    return _wait_for_success(page, marker)


@pytest.mark.slow
def test_quickstart_in_browser_console(server, tmp_path: Path, console_globals) -> None:
    """Open the IDE, paste the quick start into the console, press Enter, see its success line."""
    code = (
        "import os\n"
        f"os.environ['DH_TF_EXAMPLE_ROWS'] = '{QUICKSTART_ROWS}'\n"
        f"os.environ['DH_TF_EXAMPLE_DIR'] = {str(tmp_path)!r}\n" + (REPO / "examples" / "quickstart.py").read_text()
    )
    with ide_page(server, tmp_path, SCREENSHOT) as page:
        ours = run_in_console(page, code)
        assert any("validation loss" in line for line in ours), ours
    assert hasattr(__main__, "model")  # the console's globals are this process's __main__


METRICS_SETUP = f"""
import dh_tf
metrics = dh_tf.MetricsTable(every=5, metrics=["loss", "mae"])
metrics_table = metrics.table
metrics_plot = dh_tf.plot_metrics(metrics)
print("{SUCCESS} metrics table and plot created")
"""
METRICS_FIT = """
import keras
from deephaven import empty_table
fit_model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
fit_model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
# No table variable here: the IDE keeps the metrics table and its figure in front for the screenshot.
fit_data = dh_tf.to_dataset(empty_table(200_000).update(["X = Math.sin(i * 0.1)", "Y = 2 * X + 1"]), ["X"], "Y",
                            batch_size=256)
training = dh_tf.fit_in_background(fit_model, fit_data, epochs=4, callbacks=[metrics], verbose=0)
"""


@pytest.mark.slow
def test_metrics_table_and_plot_in_browser_console(server, tmp_path: Path, console_globals) -> None:
    """MetricsTable in the IDE: the table and its figure open from the console and tick while fit runs."""
    with ide_page(server, tmp_path, REPO / "test-artifacts" / "browser-metrics.png") as page:
        run_in_console(page, METRICS_SETUP)
        run_in_console(page, METRICS_FIT + f"print('{SUCCESS} training started')\n")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while __main__.metrics_table.size == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        ticked_during_fit = __main__.metrics_table.size > 0 and not __main__.training.done()
        __main__.training.result(timeout=RUN_TIMEOUT_S)
        time.sleep(2)  # let the IDE's table and figure panels receive the last rows for the screenshot
        history = " ".join(_texts(page, ".console-history"))
        assert "metrics_table" in history and "metrics_plot" in history, history[-2000:]
    assert ticked_during_fit
    steps = 4 * -(-200_000 // 256)
    assert __main__.metrics_table.size == steps // 5 + 4  # Step % 5 == 0, plus each epoch's end (782 * k)
