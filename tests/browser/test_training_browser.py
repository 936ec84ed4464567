"""Entrenamiento in a real browser: start a run on the digits, watch the charts update, reload
the page and find the same run still training, then cancel it."""

import re

from core.i18n import translate
from tests.browser.conftest import screenshot, wait_for_app

TIMEOUT_MS = 120_000
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


def chart_points(page) -> int:
    """Points drawn in the loss chart (the first Plotly chart of the run)."""
    return page.evaluate(
        """() => {
            const chart = document.querySelector('.js-plotly-plot');
            return chart && chart.data ? chart.data.reduce((n, trace) => n + (trace.x ? trace.x.length : 0), 0) : 0;
        }""")


def test_start_watch_reload_cancel(streamlit_server, browser_page):
    page = browser_page
    page.goto(f"{streamlit_server}/training?lang={LANG}", timeout=TIMEOUT_MS)
    page.get_by_role("heading", name=translate(LANG, "train.title"), exact=True).wait_for(timeout=TIMEOUT_MS)
    wait_for_app(page)

    start = page.get_by_role("button", name=translate(LANG, "train.start"))
    try:
        start.wait_for(timeout=TIMEOUT_MS)
    finally:
        screenshot(page, "training-form-es")
    start.click()
    page.wait_for_url(re.compile(r"[?&]run=\d{8}-\d{6}-[0-9a-f]{6}"), timeout=TIMEOUT_MS)
    run_url = page.url

    # Live: the step counter and the loss chart grow without any interaction.
    first = wait_for_step_above(page, 0)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=TIMEOUT_MS)
    points_before = chart_points(page)
    later = wait_for_step_above(page, first + 3)
    page.wait_for_function(f"() => {{ const c = document.querySelector('.js-plotly-plot');"
                           f" return c && c.data && c.data[0].x.length > {points_before}; }}", timeout=TIMEOUT_MS)
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
