"""A page's own link, opened first thing after the server starts, shows the lab's navigation.

Students open shared links (`/architecture`, a run's `/training?run=...`) and reload them after
a server restart. Until app.py has run once, Streamlit serves such a link in its pages-folder
mode, whose sidebar lists the raw file names (app, architecture, ..., home, training, tta).
`ui.common.page_setup` turns that first run into a run under app.py.
"""

from __future__ import annotations

import pytest

from tests.browser.helpers import NAV_LINK, PAGE_KEYS, TIMEOUT_MS, full_screenshot, heading, tr, wait_idle


def _sidebar_entries(page) -> list[str]:
    return [text.split("\n")[-1].strip() for text in page.locator(NAV_LINK).all_inner_texts()]


@pytest.mark.parametrize("path", ["architecture", "training"])
def test_deep_link_shows_lab_navigation(fresh_streamlit_server, browser_page, path):
    page = browser_page
    expected = [tr("en", label_key) for label_key, _ in PAGE_KEYS.values()]
    for load in ("first load", "reload"):
        if load == "first load":
            page.goto(f"{fresh_streamlit_server}/{path}?lang=en", timeout=TIMEOUT_MS)
        else:
            page.reload(timeout=TIMEOUT_MS)
        heading(page, tr("en", PAGE_KEYS[path][1])).wait_for(timeout=TIMEOUT_MS)
        wait_idle(page)
        entries = _sidebar_entries(page)
        if entries != expected:
            full_screenshot(page, f"deep-link-{path}-{load.replace(' ', '-')}")
        assert entries == expected, f"{load} of /{path}: the sidebar lists {entries}"
        assert page.url.endswith(f"/{path}?lang=en"), f"{load} of /{path} ended on {page.url}"
