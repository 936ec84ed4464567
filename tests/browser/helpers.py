"""Shared steps of the browser tests: catalog text, navigation, waiting, and error checks.

Expected texts come from the catalog through `core.i18n.translate`, so a change of wording in
locales/ does not break a test, while a raw key or the wrong language on the page does.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core.i18n import translate
from tests.browser.conftest import wait_for_app

TIMEOUT_MS = 90_000  # one Streamlit script run on a loaded two-core machine can take this long
ACTION_TIMEOUT_MS = 15_000  # one click or keystroke; a widget helper retries a lost one
EXCEPTION = "[data-testid='stException']"
ALERT_ERROR = "[data-testid='stAlertContentError']"
NAV_LINK = "[data-testid='stSidebarNav'] a[data-testid='stSidebarNavLink']"
PAGE_KEYS = {  # URL path of each page -> its navigation label and title keys
    "home": ("common.nav_home", "home.title"),
    "architecture": ("common.nav_architecture", "arch.title"),
    "gradients": ("common.nav_gradients", "grad.title"),
    "finetuning": ("common.nav_finetuning", "ft.title"),
    "training": ("common.nav_training", "train.title"),
    "tta": ("common.nav_tta", "tta.title"),
    "glossary": ("common.nav_glossary", "glossary.title"),
}


def tr(lang: str, key: str, **params: object) -> str:
    return translate(lang, key, **params)


def template_regex(lang: str, key: str) -> re.Pattern:
    """A regex matching the catalog text of `key` with each {placeholder} as a named group."""
    template = tr(lang, key)
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(part) if index % 2 == 0 else f"(?P<{part}>.+?)"
                      for index, part in enumerate(parts))
    return re.compile(pattern + "$" if template.endswith("}") else pattern)


def wait_idle(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until Streamlit's status widget no longer shows that the script is running."""
    wait_for_app(page, timeout_ms)


def url_path(path: str) -> str:
    """The URL path of a page: the home page is the app's default, served at "/"."""
    return "" if path == "home" else path


def nav_link(page, path: str):
    if path == "home":
        return page.locator(NAV_LINK).first  # app.py lists the home page first
    return page.locator(f"{NAV_LINK}[href$='/{path}']")


def open_app(page, base_url: str, path: str = "", lang: str | None = None) -> None:
    """Open the app at `path` (a key of PAGE_KEYS, "" for home) and wait for its title and navigation."""
    page.goto(app_url(base_url, path, lang), timeout=TIMEOUT_MS)
    wait_for_page(page, path, lang)


def app_url(base_url: str, path: str = "", lang: str | None = None) -> str:
    return f"{base_url}/{url_path(path)}" + (f"?lang={lang}" if lang else "")


def wait_for_page(page, path: str = "", lang: str | None = None) -> None:
    """Wait for the title of `path` and for app.py's navigation, both in `lang` (default Spanish)."""
    shown = lang or "es"
    heading(page, tr(shown, PAGE_KEYS[path or "home"][1])).wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    expected = tr(shown, "common.nav_glossary")
    try:
        nav_link(page, "glossary").filter(has_text=expected).wait_for(timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        shown_links = page.locator(NAV_LINK).all_inner_texts()
        raise AssertionError(f"/{url_path(path)}: the sidebar shows {shown_links}, not {expected!r}") from None


def go_to(page, lang: str, path: str) -> None:
    """Click a page in the sidebar (same session, state kept) and wait for its title."""
    label_key, title_key = PAGE_KEYS[path]
    link = nav_link(page, path)
    assert tr(lang, label_key) in link.inner_text(), link.inner_text()
    link.click()
    page.wait_for_url(re.compile(rf"/{url_path(path)}(\?|$)"), timeout=TIMEOUT_MS)
    heading(page, tr(lang, title_key)).wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)


def heading(page, text: str):
    return page.get_by_role("heading", name=text, exact=True).first


def sidebar(page):
    return page.locator("[data-testid='stSidebar']")


def main(page):
    return page.locator("[data-testid='stMain']")


def widget(page, testid: str, label: str, scope=None):
    """The first widget of kind `testid` (e.g. "stSelectbox") whose label is exactly `label`."""
    exact = page.locator("[data-testid='stWidgetLabel']", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return (scope or page).locator(f"[data-testid='{testid}']").filter(has=exact).first


def button(page, text: str, scope=None):
    """The first Streamlit button showing exactly `text` (Streamlit's own icons are also
    buttons, with English names such as "Open", so a role lookup is ambiguous)."""
    exact = re.compile(rf"^\s*{re.escape(text)}\s*$")
    return (scope or page).locator("[data-testid^='stBaseButton']").filter(has_text=exact).first


def act_until(page, act, check, what: str, attempts: int = 3) -> None:
    """Do `act` until `check()` is true once the app is idle again.

    A click that lands while a rerun is still redrawing the page can be lost (the widget is
    replaced under it, with its old value), so every widget helper checks its own effect.
    """
    for _ in range(attempts):
        try:
            act()
        except PlaywrightTimeout:  # e.g. a dropdown that closed again because the page redrew
            wait_idle(page)
            continue
        deadline = time.monotonic() + 15
        while not check() and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        wait_idle(page)
        page.wait_for_timeout(300)  # a rerun that was about to start has started by now
        wait_idle(page)
        if check():
            return
    raise AssertionError(f"{what}: no effect after {attempts} attempts")


def select_option(page, label: str, option: str, scope=None) -> None:
    """Pick `option` in the selectbox labelled `label`."""
    box = widget(page, "stSelectbox", label, scope)
    field = box.locator("input[role='combobox']")

    def act() -> None:
        box.click(timeout=ACTION_TIMEOUT_MS)
        page.get_by_role("option", name=option, exact=True).click(timeout=ACTION_TIMEOUT_MS)

    act_until(page, act, lambda: field.input_value() == option, f"select {option!r} in {label!r}")


def add_to_multiselect(page, label: str, option: str, scope=None) -> None:
    """Add `option` to the multiselect labelled `label` (no-op when it is already chosen)."""
    box = widget(page, "stMultiSelect", label, scope)
    chip = box.locator(".react-aria-ComboBox [data-tag]").filter(has_text=option)
    field = box.locator("input").first

    def act() -> None:
        field.click(timeout=ACTION_TIMEOUT_MS)
        field.fill(option)  # filters the list, so the option is drawn even when the list scrolls
        page.get_by_role("option", name=option, exact=True).click(timeout=ACTION_TIMEOUT_MS)
        page.keyboard.press("Escape")

    if chip.count() == 0:
        act_until(page, act, lambda: chip.count() == 1, f"add {option!r} to {label!r}")


def choose_radio(page, option: str, scope=None) -> None:
    """Click the radio button labelled `option` (inside `scope`, default the whole page)."""
    label = (scope or page).locator("[data-testid='stRadio'] label").filter(has_text=option).first
    act_until(page, lambda: label.click(timeout=ACTION_TIMEOUT_MS), lambda: label.locator("input").is_checked(), f"choose {option!r}")


def fill_number(page, label: str, value: float | int, scope=None) -> None:
    """Type `value` into the number input labelled `label` and commit it with Enter."""
    box = widget(page, "stNumberInput", label, scope)
    field = box.locator("input")

    def act() -> None:
        field.fill(str(value), timeout=ACTION_TIMEOUT_MS)
        field.press("Enter")

    def check() -> bool:
        try:
            return float(field.input_value()) == float(value)
        except ValueError:
            return False

    act_until(page, act, check, f"type {value} into {label!r}")


def open_expander(page, label: str, scope=None) -> None:
    """Open the expander titled `label` unless it is open already (a click would close it)."""
    summary = (scope or page).locator("[data-testid='stExpander'] summary").filter(has_text=label).first
    details = summary.locator("xpath=..")  # expanders nest: match the title, not the outer block
    if details.get_attribute("open") is None:
        summary.click()
        page.wait_for_function("(d) => d.open", arg=details.element_handle())
        wait_idle(page)


def errors_on_page(page) -> list[str]:
    """Streamlit exception boxes and error banners currently shown."""
    found = [f"exception: {text}" for text in page.locator(EXCEPTION).all_inner_texts()]
    found += [f"error banner: {text}" for text in page.locator(ALERT_ERROR).all_inner_texts()]
    return found


def assert_no_errors(page, where: str) -> None:
    found = errors_on_page(page)
    assert not found, f"{where}: {found}"


def log_offset(log_path: Path) -> int:
    return log_path.stat().st_size if log_path.exists() else 0


def new_log_problems(log_path: Path, offset: int) -> list[str]:
    """Tracebacks and ERROR lines the server wrote after `offset` (each with a little context)."""
    if not log_path.exists():
        return []
    with open(log_path, encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        lines = log.read().splitlines()
    problems = []
    for index, line in enumerate(lines):
        if line.startswith("Traceback") or " ERROR " in line or line.startswith("ERROR"):
            problems.append("\n".join(lines[max(0, index - 2):index + 25]))
    return problems


MAX_SHOT_HEIGHT = 9_000  # px; a taller page is cut here


def full_screenshot(page, name: str) -> Path:
    """A screenshot of the whole page, below the fold included.

    Streamlit scrolls inside its own container, so Playwright's full_page=True stops at the
    viewport; the viewport is stretched to the content's height for the picture, then restored.
    """
    from tests.browser.conftest import screenshot

    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'[data-testid=\"stMain\"], [data-testid=\"stAppViewContainer\"], [data-testid=\"stSidebarContent\"]')]"
        ".map(e => e.scrollHeight), document.documentElement.scrollHeight)")
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), MAX_SHOT_HEIGHT)})
    # Charts redraw at the new size; a fragment polling a run may be redrawing them as well.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-stale=\"false\"] .js-plotly-plot')]"
        ".every(p => { const s = p.querySelector('.main-svg'); return s && s.getBoundingClientRect().width > 0; })",
        timeout=10_000)
    page.wait_for_timeout(1_500)
    try:
        return screenshot(page, name)
    finally:
        page.set_viewport_size(size)


_FIND_PLOT = ("const plot = [...document.querySelectorAll('.js-plotly-plot')]"
              ".find(p => { const t = p.querySelector('.gtitle'); return t && t.textContent === title; });")


def plot_traces(page, title: str) -> list[dict] | None:
    """The traces of the Plotly chart titled `title` as Plotly drew them, or None if not on the page.

    Read from `_fullData`: plotly.py sends numbers as packed typed arrays, which only the drawn
    traces hold decoded. Each trace gives its name, x, y and base as plain lists.
    """
    return page.evaluate(
        "(title) => { " + _FIND_PLOT + " if (!plot || !plot._fullData) return null;"
        " const list = v => v == null ? null : Array.from(v);"
        " return plot._fullData.map(d => ({name: d.name, x: list(d.x), y: list(d.y), base: list(d.base)})); }",
        title)


RAW_KEY = re.compile(r"\b(?:common|home|arch|grad|ft|train|tta|glossary|data|errors)\.[a-z0-9]+_[a-z0-9_]+\b")
MIN_FOREIGN_CHUNK = 16  # shorter catalog fragments ("Época", "Modelo") prove nothing


def _foreign_chunks(lang: str) -> dict[str, str]:
    """Literal pieces of the other language's catalog that never appear in `lang`'s: chunk -> key."""
    from core.i18n import LANGUAGES, load_catalog

    own = load_catalog(lang)
    own_text = "\n".join(own.values())
    chunks = {}
    for other in LANGUAGES:
        if other == lang:
            continue
        for key, text in load_catalog(other).items():
            if text == own.get(key):
                continue
            for piece in re.split(r"\{\w+\}|\*\*|`|\n", text):
                piece = piece.strip(" .,:;·()")
                if len(piece) >= MIN_FOREIGN_CHUNK and piece not in own_text:
                    chunks[piece] = key
    return chunks


def translation_problems(page, lang: str) -> list[str]:
    """Raw catalog keys, and text of the other language, visible in the page's main area or sidebar."""
    text = "\n".join(page.locator("[data-testid='stMain'], [data-testid='stSidebar']").all_inner_texts())
    problems = [f"raw catalog key {key!r}" for key in sorted(set(RAW_KEY.findall(text)))]
    problems += [f"{chunk!r} (from {key}) on a page in {lang!r}"
                 for chunk, key in _foreign_chunks(lang).items() if chunk in text]
    return problems
