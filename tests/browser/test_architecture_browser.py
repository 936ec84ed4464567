"""Arquitectura in a real browser: open the app, switch to English, change the depth, see new totals."""

from tests.browser.conftest import screenshot, wait_for_app


def _metric_values(page) -> list[str]:
    return page.locator("[data-testid='stMetricValue']").all_inner_texts()


def test_switch_language_and_depth(streamlit_server, browser_page):
    page = browser_page
    page.goto(f"{streamlit_server}/architecture")
    wait_for_app(page)
    page.get_by_role("heading", name="Arquitectura").first.wait_for()
    page.get_by_text("11,689,512", exact=True).first.wait_for(timeout=60_000)

    page.locator("[data-testid='stSidebar']").get_by_text("English", exact=True).click()
    wait_for_app(page)
    page.get_by_role("heading", name="Architecture").first.wait_for()

    depth = page.locator("[data-testid='stSelectbox']").filter(has_text="Depth")
    depth.click()
    page.get_by_role("option", name="ResNet-50", exact=True).click()
    wait_for_app(page)
    page.get_by_text("25,557,032", exact=True).first.wait_for(timeout=60_000)

    values = _metric_values(page)
    assert "25,557,032" in values
    assert "4.09 G" in values
    assert page.get_by_role("heading", name="ResNet-50").count() == 1
    screenshot(page, "architecture_resnet50_en")
