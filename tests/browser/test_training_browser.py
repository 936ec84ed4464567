"""Entrenamiento in a real browser: start a run on the digits, watch the charts update, reload
the page and find the same run still training, then cancel it."""

import re

import pytest

from core import jobs
from core.i18n import translate
from tests.browser.conftest import screenshot, wait_for_app

TIMEOUT_MS = 240_000
LANG = "es"
PROGRESS = re.compile(r"Paso (\d+) de (\d+)")


def progress_step(page) -> int:
    """The step number in the progress bar's text, or -1 while there is none."""
    match = PROGRESS.search(page.locator("[data-testid='stProgress']").first.inner_text()) \
        if page.locator("[data-testid='stProgress']").count() else None
    return int(match.group(1)) if match else -1


def wait_for_step_above(page, step: int) -> int:
    page.wait_for_function(
        """([pattern, step]) => {
            const bar = document.querySelector("[data-testid='stProgress']");
            const match = bar && bar.innerText.match(new RegExp(pattern));
            return match && Number(match[1]) > step;
        }""",
        arg=[PROGRESS.pattern, step], timeout=TIMEOUT_MS)
    return progress_step(page)


LOSS_LINE = ".js-plotly-plot .scatterlayer .trace path.js-line"


def loss_line(page) -> str:
    """The SVG path of the training-loss trace: it changes whenever new points are drawn."""
    return page.locator(LOSS_LINE).first.get_attribute("d") or ""


@pytest.fixture
def cancel_leftover_run(tmp_path_factory):
    """Cancel the run this test started if the test fails midway, so no worker trains on."""
    started = []
    yield started
    for run_dir in tmp_path_factory.getbasetemp().glob("browser-runs*"):
        store = jobs.Store(run_dir)
        for run_id in started:
            run = store.get(run_id)
            if run is not None and run.is_active:
                store.cancel(run_id)


def test_start_watch_reload_cancel(streamlit_server, browser_page, cancel_leftover_run):
    page = browser_page
    page.goto(f"{streamlit_server}/training?lang={LANG}", timeout=TIMEOUT_MS)
    page.get_by_role("heading", name=translate(LANG, "train.title"), exact=True).wait_for(timeout=TIMEOUT_MS)
    wait_for_app(page)

    start = page.get_by_role("button", name=translate(LANG, "train.start"))
    start.wait_for(timeout=TIMEOUT_MS)
    start.click()
    page.wait_for_url(re.compile(r"[?&]run=\d{8}-\d{6}-[0-9a-f]{6}"), timeout=TIMEOUT_MS)
    run_url = page.url
    cancel_leftover_run.append(re.search(r"run=([0-9a-f-]+)", run_url).group(1))

    # Live: the step counter and the loss chart move without any interaction.
    first = wait_for_step_above(page, 0)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=TIMEOUT_MS)
    page.locator(LOSS_LINE).first.wait_for(timeout=TIMEOUT_MS)
    drawn = loss_line(page)
    later = wait_for_step_above(page, first + 3)
    page.wait_for_function("([selector, before]) => { const line = document.querySelector(selector);"
                           " return line && line.getAttribute('d') !== before; }",
                           arg=[LOSS_LINE, drawn], timeout=TIMEOUT_MS)
    screenshot(page, "training-live-es")

    # Reload: the URL brings the same run back, still moving.
    page.reload(timeout=TIMEOUT_MS)
    assert page.url == run_url
    page.get_by_text(translate(LANG, "train.status_running"), exact=False).first.wait_for(timeout=TIMEOUT_MS)
    wait_for_step_above(page, later)

    # Cancel: the run stops and says so.
    page.get_by_role("button", name=translate(LANG, "train.cancel")).click()
    page.get_by_text(translate(LANG, "train.status_cancelled"), exact=False).first.wait_for(timeout=TIMEOUT_MS)
    wait_for_app(page)
    assert page.get_by_role("button", name=translate(LANG, "train.cancel")).count() == 0
    screenshot(page, "training-cancelled-es")
