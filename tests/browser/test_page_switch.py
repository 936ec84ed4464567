"""Settings survive a trip through the sidebar, and a glossary link opens the section it names.

Streamlit drops the value of every widget a run does not draw, and its navigation drops the
query string. The lab keeps both per session: its widgets use `persist_state="session"`, and the
pages remember their current run (the LAST_RUN keys).
"""

from tests.browser.helpers import TIMEOUT_MS, assert_no_errors, go_to, main, open_app, tr, widget

LANG = "en"


def _section(page, section: str):
    """A section option of Gradientes (a segmented control: its options are radio buttons)."""
    return main(page).get_by_role("radio", name=tr(LANG, f"grad.section_{section}"), exact=True)


def _section_checked(page, section: str) -> bool:
    return _section(page, section).get_attribute("aria-checked") == "true"


def test_settings_survive_sidebar_trip(streamlit_server, browser_page):
    page = browser_page
    open_app(page, streamlit_server, "gradients", LANG)
    _section(page, "shattered").click()
    page.get_by_text(tr(LANG, "grad.points")).first.wait_for(timeout=TIMEOUT_MS)

    go_to(page, LANG, "glossary")
    query = widget(page, "stTextInput", tr(LANG, "glossary.search")).locator("input")
    query.fill("warmup")
    query.press("Enter")
    # Every term is listed before the search, so wait for one that does not match to go.
    other_term = page.get_by_role("heading", name=tr(LANG, "glossary.bottleneck_name"), exact=True)
    other_term.wait_for(state="detached", timeout=TIMEOUT_MS)

    go_to(page, LANG, "gradients")
    page.get_by_text(tr(LANG, "grad.points")).first.wait_for(timeout=TIMEOUT_MS)
    assert _section_checked(page, "shattered")

    go_to(page, LANG, "glossary")
    other_term.wait_for(state="detached", timeout=TIMEOUT_MS)
    assert query.input_value() == "warmup"
    assert_no_errors(page, "glossary after the trip")


def test_glossary_link_opens_degradation(streamlit_server, browser_page):
    page = browser_page
    open_app(page, streamlit_server, "glossary", LANG)
    query = widget(page, "stTextInput", tr(LANG, "glossary.search")).locator("input")
    query.fill(tr(LANG, "glossary.degradation_name"))
    query.press("Enter")
    page.get_by_role("heading", name=tr(LANG, "glossary.degradation_name"), exact=True).wait_for(timeout=TIMEOUT_MS)
    main(page).locator("a[href*='section=degradation']").first.click()
    page.get_by_text(tr(LANG, "grad.deg_start")).first.wait_for(timeout=TIMEOUT_MS)
    assert _section_checked(page, "degradation")
    assert "lang=en" in page.url
    assert_no_errors(page, "gradients opened from the glossary")
