"""core.glossary: the week's term list, catalog texts in both languages, pages, and search."""

from pathlib import Path

import pytest

from core.glossary import TERMS, fold, matches, search, sort_key, term_keys
from core.i18n import LANGUAGES, load_catalog

# The week's vocabulary, as the field writes it in English.
WEEK_TERMS = {
    "BasicBlock", "Backbone", "Bottleneck", "Cosine Annealing", "Degradation Problem",
    "Discriminative Learning Rates", "Downsample", "Early Stopping", "Expansion", "Exploding Gradients",
    "Feature Extraction", "Fine-tuning", "Freeze/Unfreeze", "Gradual Unfreezing", "Identity Mapping",
    "ImageNet", "Layer Groups", "Learning Rate Warmup", "Pretrained Weights", "Residual Learning", "ResNet",
    "Skip Connection", "Stem", "Test Time Augmentation", "Transfer Learning", "Vanishing Gradients",
    "Weight Decay",
}
DEMO_PAGES = {"pages/architecture.py", "pages/gradients.py", "pages/finetuning.py", "pages/training.py",
              "pages/tta.py"}


def test_english_names_are_the_week_terms():
    catalog = load_catalog("en")
    names = {catalog[f"glossary.{term.id}_name"].removesuffix(" (TTA)") for term in TERMS}
    assert names == WEEK_TERMS


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_term_has_its_texts(lang):
    catalog = load_catalog(lang)
    missing = [key for term in TERMS for key in term_keys(term) if not catalog.get(key, "").strip()]
    assert missing == []


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_orphan_term_texts(lang):
    catalog = load_catalog(lang)
    known = {key for term in TERMS for key in term_keys(term)}
    term_suffixes = ("_name", "_def", "_note")
    orphans = [key for key in catalog if key.startswith("glossary.") and key.endswith(term_suffixes)
               and key not in known]
    assert orphans == []


def test_spanish_names_keep_the_field_term():
    """A translated name carries the English term, so a search in either language finds it."""
    es, en = load_catalog("es"), load_catalog("en")
    for term in TERMS:
        english_name = en[f"glossary.{term.id}_name"]
        assert english_name.casefold() in es[f"glossary.{term.id}_name"].casefold()


def test_every_term_links_to_a_demo_page():
    assert all(term.pages and set(term.pages) <= DEMO_PAGES for term in TERMS)
    assert len({term.id for term in TERMS}) == len(TERMS)


def test_formulas_from_the_course():
    formulas = {term.id: term.formula for term in TERMS}
    assert r"\mathrm{lr}_{\min} + \tfrac{1}{2}" in formulas["cosine_annealing"]
    assert "y = \\mathcal{F}(x) + x" in formulas["residual_learning"]
    assert "\\prod_{i=1}^{n-1}" in formulas["vanishing_gradients"]
    assert formulas["exploding_gradients"] == formulas["vanishing_gradients"]


def test_degradation_is_defined_as_training_error():
    en = load_catalog("en")
    assert "training error" in en["glossary.degradation_def"]
    assert "not overfitting" in en["glossary.degradation_note"]


@pytest.mark.parametrize("text, folded", [("Degradación", "degradacion"), ("ÉPOCA", "epoca"),
                                          ("Ñandú", "nandu"), ("γ y β", "γ y β")])
def test_fold(text, folded):
    assert fold(text) == folded


@pytest.mark.parametrize("query, text, expected", [
    ("degradacion", "Problema de degradación", True),
    ("DEGRADACIÓN", "problema de degradacion", True),
    ("error entrenamiento", "más error en el conjunto de entrenamiento", True),
    ("error validación", "más error en el conjunto de entrenamiento", False),
    ("", "anything", True),
    ("   ", "anything", True),
])
def test_matches(query, text, expected):
    assert matches(query, text) is expected


def test_search_keeps_order():
    texts = {"b": "beta gamma", "a": "alpha gamma", "c": "delta"}
    assert search("gamma", texts) == ["b", "a"]
    assert search("", texts) == ["b", "a", "c"]


def test_sort_key_ignores_accents():
    assert sorted(["Época", "Embudo", "Fin"], key=sort_key) == ["Embudo", "Época", "Fin"]


def test_demo_pages_are_paths_in_the_repository(repo_root):
    existing = {page for page in DEMO_PAGES if (repo_root / page).exists()}
    assert "pages/architecture.py" in existing
    assert all(Path(page).suffix == ".py" for page in DEMO_PAGES)
