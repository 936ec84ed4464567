"""Glosario page under AppTest, in both languages: every term, formulas, search, links."""

import pytest

from core.glossary import TERMS
from tests.app.conftest import open_page

PAGE = "pages/glossary.py"


def _names(at) -> list[str]:
    return [header.value for header in at.subheader]


@pytest.mark.parametrize("lang, title, degradation", [
    ("es", "Glosario", "Problema de degradación (Degradation Problem)"),
    ("en", "Glossary", "Degradation Problem"),
])
def test_every_term_is_shown(lang, title, degradation):
    at = open_page(PAGE, lang=lang)
    at.run()
    assert not at.exception
    assert at.title[0].value == title
    assert len(at.subheader) == len(TERMS) == 27
    assert degradation in _names(at)
    assert not [name for name in _names(at) if name.endswith("_name")]  # no raw catalog keys


def test_terms_are_in_alphabetical_order_of_the_language():
    at = open_page(PAGE, lang="en")
    at.run()
    names = _names(at)
    assert names == sorted(names, key=str.casefold)
    assert names[0] == "Backbone"


def test_formulas_are_rendered():
    at = open_page(PAGE, lang="es")
    at.run()
    formulas = [latex.value for latex in at.latex]
    assert any(r"\cos\frac{\pi t}{T}" in formula for formula in formulas)
    assert any(r"y = \mathcal{F}(x) + x" in formula for formula in formulas)
    assert any(r"\prod_{i=1}^{n-1}" in formula for formula in formulas)


@pytest.mark.parametrize("lang, query, expected", [
    ("es", "degradacion", "Problema de degradación (Degradation Problem)"),
    ("es", "DEGRADACIÓN", "Problema de degradación (Degradation Problem)"),
    ("es", "requires_grad", "Congelar / descongelar (Freeze/Unfreeze)"),
    ("en", "overfitting training error", "Degradation Problem"),
    ("en", "1e-3 layer4", "Discriminative Learning Rates"),
])
def test_search_is_accent_and_case_insensitive(lang, query, expected):
    at = open_page(PAGE, lang=lang)
    at.run()
    at.text_input(key="glossary_query").set_value(query).run()
    assert not at.exception
    assert expected in _names(at)
    assert len(at.subheader) < len(TERMS)


@pytest.mark.parametrize("lang, fragment", [("es", "Ningún término"), ("en", "No term")])
def test_search_without_results(lang, fragment):
    at = open_page(PAGE, lang=lang)
    at.run()
    at.text_input(key="glossary_query").set_value("transformer").run()
    assert not at.exception
    assert len(at.subheader) == 0
    assert fragment in at.warning[0].value


def test_degradation_entry_says_training_error_not_overfitting():
    at = open_page(PAGE, lang="es")
    at.run()
    at.text_input(key="glossary_query").set_value("degradación").run()
    notes = [info.value for info in at.info]
    assert any("No es sobreajuste" in note and "entrenamiento" in note for note in notes)


def test_every_term_names_its_pages():
    at = open_page(PAGE, lang="en")
    at.run()
    shown = len(at.get("page_link")) + len([m for m in at.markdown if m.value.startswith("[")])
    missing = [caption.value for caption in at.caption if "(not available yet)" in caption.value]
    assert shown + len(missing) == sum(len(term.pages) for term in TERMS)


def test_degradation_link_opens_its_section():
    at = open_page("app.py", "en")
    at.run()
    at.switch_page("pages/glossary.py").run()
    assert not at.exception
    query_strings = [link.proto.query_string for link in at.get("page_link")]
    assert query_strings.count("section=degradation") == 1
