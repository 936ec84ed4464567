"""The catalog: same keys and placeholders in both languages, and no UI text outside it."""

import ast
import json
import string
from pathlib import Path

import pytest

from core.i18n import LANGUAGES, LOCALES_DIR, load_catalog

REPO_ROOT = Path(__file__).resolve().parent.parent
UI_SOURCES = sorted([REPO_ROOT / "app.py", *(REPO_ROOT / "pages").glob("*.py"), *(REPO_ROOT / "ui").glob("*.py")])

# Streamlit and Plotly calls whose string arguments a person reads.
DISPLAY_CALLS = {
    "title", "header", "subheader", "markdown", "caption", "write", "text", "code", "info", "success",
    "warning", "error", "exception", "toast", "metric", "button", "download_button", "link_button",
    "page_link", "checkbox", "toggle", "radio", "selectbox", "multiselect", "slider", "select_slider",
    "text_input", "number_input", "text_area", "date_input", "time_input", "file_uploader",
    "camera_input", "color_picker", "expander", "tabs", "popover", "form_submit_button", "status",
    "progress", "spinner", "segmented_control", "pills", "dialog", "Page", "set_page_config",
    "update_layout", "update_xaxes", "update_yaxes", "add_trace", "Scatter", "Bar", "Heatmap",
    "Histogram", "Box", "Line", "line", "bar", "scatter", "imshow", "add_annotation", "add_vline",
    "add_hline", "add_vrect", "add_hrect", "column_config", "TextColumn", "NumberColumn",
    "ProgressColumn", "CheckboxColumn", "LineChartColumn",
}
# Keyword arguments that are identifiers, formats or file metadata, not prose.
NON_TEXT_KEYWORDS = {
    "key", "type", "mime", "file_name", "icon", "format", "mode", "barmode", "template", "color",
    "orientation", "layout", "page_icon", "initial_sidebar_state", "url_path", "language",
    "label_visibility", "width", "height", "use_container_width", "hoverinfo", "line_shape", "fill",
    "textposition", "xaxis", "yaxis", "colorscale", "symbol", "dash", "legendgroup", "x", "y", "z",
    "marker", "line", "hovermode", "range", "tickformat", "textinfo", "visible", "side", "anchor",
    "overlaying", "xref", "yref", "ids", "customdata", "hovertemplate", "texttemplate", "nbinsx",
    "col", "row", "scaleanchor", "gap", "vertical_alignment", "align", "help_text_key", "on_click",
    "on_change", "selection_mode", "args", "kwargs", "accept_multiple_files", "step", "min_value",
    "max_value", "value", "index", "options", "placeholder_key", "unit", "exponentformat", "persist_state",
}


def _has_words(text: str) -> bool:
    """True for prose: two or more letters in a row, ignoring {placeholders} and format specs."""
    stripped = "".join(part[0] for part in string.Formatter().parse(text) if part[0])
    letters = 0
    for char in stripped:
        letters = letters + 1 if char.isalpha() else 0
        if letters >= 2:
            return True
    return False


def _literal_texts(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [value.value for value in node.values if isinstance(value, ast.Constant)]
    return []


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def test_catalog_keys_identical():
    catalogs = {lang: load_catalog(lang) for lang in LANGUAGES}
    only_es = sorted(set(catalogs["es"]) - set(catalogs["en"]))
    only_en = sorted(set(catalogs["en"]) - set(catalogs["es"]))
    assert only_es == [], f"keys missing in English: {only_es}"
    assert only_en == [], f"keys missing in Spanish: {only_en}"


def test_catalog_files_paired():
    es_files = sorted(path.name for path in (LOCALES_DIR / "es").glob("*.json"))
    en_files = sorted(path.name for path in (LOCALES_DIR / "en").glob("*.json"))
    assert es_files == en_files


@pytest.mark.parametrize("path", sorted((LOCALES_DIR / "es").glob("*.json")) + sorted((LOCALES_DIR / "en").glob("*.json")),
                         ids=lambda path: f"{path.parent.name}/{path.name}")
def test_catalog_file_valid(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    empty = [key for key, text in data.items() if not isinstance(text, str) or not text.strip()]
    assert empty == [], f"empty or non-text entries in {path}: {empty}"


def test_placeholders_match():
    es, en = load_catalog("es"), load_catalog("en")
    mismatched = []
    for key in sorted(set(es) & set(en)):
        fields_es = {field for _, field, _, _ in string.Formatter().parse(es[key]) if field}
        fields_en = {field for _, field, _, _ in string.Formatter().parse(en[key]) if field}
        if fields_es != fields_en:
            mismatched.append(f"{key}: es={sorted(fields_es)} en={sorted(fields_en)}")
    assert mismatched == []


@pytest.mark.parametrize("path", UI_SOURCES, ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
def test_no_text_outside_catalog(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    offenders = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _call_name(node) not in DISPLAY_CALLS:
            continue
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        if isinstance(receiver, ast.Name) and receiver.id in {"logger", "logging", "parser"}:
            continue
        arguments = list(node.args) + [kw.value for kw in node.keywords if kw.arg not in NON_TEXT_KEYWORDS]
        for argument in arguments:
            for text in _literal_texts(argument):
                if _has_words(text) and not text.startswith(("pages/", ":material/")):
                    offenders.append(f"line {node.lineno}: {_call_name(node)}({text!r})")
    assert offenders == [], "user-visible text must come from the catalog (t(...)):\n" + "\n".join(offenders)


@pytest.mark.parametrize("path", UI_SOURCES, ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
def test_literal_keys_exist(path):
    catalog = load_catalog("en")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in {"t", "translate"} and node.args:
            key_node = node.args[-1] if _call_name(node) == "translate" else node.args[0]
            if isinstance(key_node, ast.Constant) and isinstance(key_node.value, str) and key_node.value not in catalog:
                missing.append(f"line {node.lineno}: {key_node.value}")
    assert missing == []


def test_core_never_imports_streamlit():
    offenders = []
    for path in sorted((REPO_ROOT / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "streamlit" or name.startswith(("streamlit.", "ui.", "pages.")) or name == "ui" for name in names):
                offenders.append(path.relative_to(REPO_ROOT).as_posix())
    assert offenders == []
