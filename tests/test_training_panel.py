"""dh_tf.training_panel: its checks and texts here, and the panel itself in the web IDE in a real (headless) Chromium.

The browser test pastes examples/training_panel.py into the IDE console (as test_browser.py does with the quick
start), sees the panel's step counter and learning curve grow, presses Stop, and sees training end there and the
panel say so. A screenshot is saved to ``test-artifacts/browser-training-panel.png`` whether it passes or fails.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_browser import console_globals, ide_page, run_in_console  # noqa: F401 (console_globals: a fixture)

import __main__
import dh_tf
from dh_tf.tf.background import FitProgress
from dh_tf.write import training_panel as panel_module
from dh_tf.write.training_panel import _View, format_seconds, status_line

SCREENSHOT = REPO / "test-artifacts" / "browser-training-panel.png"
PANEL_ROWS = 400_000  # 320,000 training rows: 1250 steps an epoch at batch 256, 37,500 in all (minutes)
STEPS_PER_EPOCH = 1250
EPOCHS = 30
WAIT_S = 120


def progress(**fields) -> FitProgress:
    return FitProgress(**{"epoch": 1, "epochs": 3, "step": 10, "steps_per_epoch": 32, "steps_done": 42,
                          "steps_total": 96, **fields})


@pytest.mark.parametrize(("view", "line"), [
    (_View(FitProgress(), has_table=False), "Starting"),
    (_View(progress(), has_table=True), "Training: epoch 2/3, step 10/32"),
    (_View(progress(steps_per_epoch=None, steps_total=None), True), "Training: epoch 2/3, step 10/?"),
    (_View(progress(stop_requested=True), True), "Stopping after this batch (epoch 2/3, step 10/32)"),
    (_View(progress(stop_requested=True), True, done=True),
     "Stopped at epoch 2/3, step 10/32 (Stop pressed or run.stop()); the model and the metrics table are usable"),
    (_View(progress(epoch=2, step=32, steps_done=96, stop_requested=True), True, done=True), "Finished: 96 steps"),
    (_View(progress(), True, done=True), "Ended early at epoch 2/3, step 10/32 (a callback stopped it)"),
    (_View(progress(), True, done=True, error="ValueError: bad"), "Failed at epoch 2/3, step 10/32"),
    (_View(FitProgress(), False, done=True, cancelled=True), "Cancelled before training began"),
])
def test_status_line_says_where_training_is_and_how_it_ended(view, line):
    assert status_line(view) == line


def test_eta_and_its_format():
    assert progress(seconds_per_step=0.5).eta_s == 27.0
    assert progress().eta_s is None and progress(steps_total=None, seconds_per_step=0.5).eta_s is None
    assert [format_seconds(s) for s in (0.4, 42, 75.2, 3599, 7500)] == ["0 s", "42 s", "1 min 15 s", "59 min 59 s",
                                                                         "2 h 05 min"]


def test_wrong_arguments_are_refused_before_any_import():
    with pytest.raises(TypeError, match=r"^training_panel: run must be what dh_tf.fit_in_background returned "
                                        r"\(a TrainingRun\) \(got Future\)$"):
        import concurrent.futures

        dh_tf.training_panel(concurrent.futures.Future(), None)
    with pytest.raises(TypeError, match=r"^training_panel: metrics must be a dh_tf.MetricsTable \(got list\)$"):
        dh_tf.training_panel(dh_tf.TrainingRun(), [])


def test_without_the_ui_plugins_the_error_says_what_to_install(server, monkeypatch):
    """The plugins blocked from import, as if not installed: MissingDependencyError (an ImportError) names the extra."""
    monkeypatch.setitem(sys.modules, "deephaven.ui", None)
    panel_module._panel_component.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"^training_panel needs the deephaven.ui plugins: pip install "
                                              r"'dh-tf\[ide\]' \(deephaven-plugin-ui and deephaven-plugin-plotly-"
                                              r"express\) into the server's Python, then restart the server$") as e:
            dh_tf.training_panel(dh_tf.TrainingRun(), dh_tf.MetricsTable(metrics=["loss"]))
        assert isinstance(e.value, dh_tf.MissingDependencyError)
    finally:
        panel_module._panel_component.cache_clear()


def panel_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == panel_module.PANEL_THREAD_NAME]


def test_the_polling_thread_sets_views_until_closed_and_ends_after_the_run_ends(server):
    """The panel's dh_tf-panel thread (NOTE [ Training panel updates ]): a view at once, closing ends it; a run that
    ends (here: with an error) gives a last view naming the error, and the thread ends by itself."""
    run, metrics, views = dh_tf.TrainingRun(), dh_tf.MetricsTable(metrics=["loss"]), []
    close = panel_module._poll(run, metrics, views.append)
    deadline = time.monotonic() + WAIT_S
    while not views and time.monotonic() < deadline:
        time.sleep(0.01)
    assert views == [_View(FitProgress(), has_table=True)]
    close()
    deadline = time.monotonic() + WAIT_S
    while panel_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not panel_threads()

    views.clear()
    panel_module._poll(run, metrics, views.append)
    run.set_exception(ValueError("loss is NaN at step 7"))
    deadline = time.monotonic() + WAIT_S
    while panel_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not panel_threads()  # ended without close(): the run is done
    assert views[-1] == _View(FitProgress(), True, done=True, error="ValueError: loss is NaN at step 7")
    assert status_line(views[-1]) == "Failed at epoch 1/?, step 0/?"


# The browser test.

def press(page, name: str) -> None:
    """Presses a button; a click event without a pointer when the login overlay still takes pointer clicks
    (see _click_console_input in test_browser.py): React Spectrum treats it as a press too."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    button = page.get_by_role("button", name=name)
    try:
        button.click(timeout=10_000)
    except PlaywrightTimeoutError:
        button.dispatch_event("click")


def panel_text(page) -> str:
    return page.inner_text("body")


def wait_for(page, what: str, read, timeout_s: float = WAIT_S):
    """Polls ``read()`` until it returns something truthy; fails naming ``what`` with the page text."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"the panel never showed {what} within {timeout_s} s; page text:\n{panel_text(page)[-3000:]}")


def steps_shown(page) -> tuple[int, int] | None:
    match = re.search(r"Steps: (\d+) / (\d+)", panel_text(page))
    return None if match is None else (int(match[1]), int(match[2]))


# The number of points of each trace of each plotly chart on the page (plotly keeps a chart's data on its div).
CURVE_POINTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
    gd => (gd.data || []).map(trace => (trace.x ? trace.x.length : 0)))"""


def by_step_points(page) -> int:
    """Points of the first trace (loss) of the "By step" chart: the chart with the most points."""
    charts = page.evaluate(CURVE_POINTS)
    return max((traces[0] for traces in charts if traces), default=0)


@pytest.mark.slow
@pytest.mark.usefixtures("console_globals")
def test_panel_in_the_ide_grows_then_stop_ends_training(server, tmp_path: Path):
    code = f"import os\nos.environ['DH_TF_EXAMPLE_ROWS'] = '{PANEL_ROWS}'\n" + (
        REPO / "examples" / "training_panel.py").read_text()
    try:
        with ide_page(server, tmp_path, SCREENSHOT) as page:
            run_in_console(page, code)
            wait_for(page, "the training status", lambda: "Training: epoch" in panel_text(page))
            first = wait_for(page, "a step count above 0", lambda: (s := steps_shown(page)) and s[0] > 0 and s)
            points = wait_for(page, "a curve of 2 points", lambda: (n := by_step_points(page)) >= 2 and n)
            later = wait_for(page, "the step counter advance", lambda: (s := steps_shown(page)) and s[0] > first[0]
                             and s)
            more_points = wait_for(page, "the curve grow", lambda: (n := by_step_points(page)) > points and n)
            text = panel_text(page)
            assert first[1] == later[1] == EPOCHS * STEPS_PER_EPOCH, (first, later)
            assert re.search(r"ETA: (\d+ s|\d+ min \d\d s|\d+ h \d\d min)", text), text[-3000:]
            assert re.search(r"[\d,]+ rows/s", text), text[-3000:]

            press(page, "Stop")
            stopped = wait_for(page, "that training stopped",
                               lambda: re.search(rf"Stopped at epoch (\d+)/{EPOCHS}, "
                                                 rf"step (\d+)/{STEPS_PER_EPOCH} \(Stop pressed",
                                                 panel_text(page)))
            assert page.get_by_role("button", name="Stop").is_disabled()
            training, metrics_table = __main__.training, __main__.metrics_table
            history = training.result(timeout=WAIT_S)  # a stopped fit ends normally
            final = training.progress()
            assert training.stop_requested and final.steps_done < EPOCHS * STEPS_PER_EPOCH
            assert (int(stopped[1]), int(stopped[2])) == (final.epoch + 1, final.step)
            assert history.epoch[-1] == final.epoch
            assert __main__.metrics.flush()
            from deephaven.numpy import to_numpy

            assert to_numpy(metrics_table.view(["Step"]))[-1, 0] == final.steps_done  # the stopped step's row
            wait_for(page, f"the last step count {final.steps_done}", lambda: steps_shown(page) == (
                final.steps_done, EPOCHS * STEPS_PER_EPOCH))
            print(f"panel: steps {first[0]} -> {later[0]}, curve points {points} -> {more_points}, "
                  f"stopped at {final.steps_done}")
    finally:
        if hasattr(__main__, "training"):  # never leave a fit running for the next tests
            __main__.training.stop()
            __main__.training.exception(timeout=WAIT_S)
