"""Fine-tuning page in a real browser, in Spanish and English: the preview charts draw, a preset
applies, and a bad schedule file gives a translated message while the schedule stays."""

import pytest

from core.i18n import translate
from tests.browser.conftest import screenshot, wait_for_app

TIMEOUT_MS = 90_000


def open_finetuning(page, url: str, lang: str) -> None:
    page.goto(f"{url}/finetuning?lang={lang}", timeout=TIMEOUT_MS)
    page.get_by_role("heading", name=translate(lang, "ft.title"), exact=True).wait_for(timeout=TIMEOUT_MS)
    wait_for_app(page)


@pytest.mark.parametrize("lang", ["es", "en"])
def test_preview_charts_draw(streamlit_server, browser_page, lang):
    page = browser_page
    open_finetuning(page, streamlit_server, lang)
    page.get_by_text(translate(lang, "ft.chart_lr_title")).first.wait_for(timeout=TIMEOUT_MS)
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=TIMEOUT_MS)  # Plotly draws lazily
    assert page.locator(".js-plotly-plot").count() == 3
    assert page.get_by_text("513,000").count() >= 1  # trainable at the start: ResNet-18's fc
    screenshot(page, f"finetuning-{lang}")


def test_preset_applies_and_bad_file_keeps_the_schedule(streamlit_server, browser_page, tmp_path):
    page = browser_page
    open_finetuning(page, streamlit_server, "es")

    page.get_by_text(translate("es", "ft.apply_preset"), exact=True).click()
    wait_for_app(page)

    bad = tmp_path / "plan.json"
    bad.write_text('{"version": 1, "epochs": ', encoding="utf-8")
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text=translate("es", "ft.upload"))
    uploader.locator("input[type='file']").set_input_files(str(bad))
    wait_for_app(page)
    page.get_by_text("El archivo no es JSON válido", exact=False).wait_for(timeout=TIMEOUT_MS)
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".js-plotly-plot").count() == 3
    screenshot(page, "finetuning-bad-json-es")
