"""Glosario: the week's terms in our own words, searchable, each linked to the page that shows it."""

from pathlib import Path

import streamlit as st

from core.glossary import TERMS, Term, search, sort_key
from ui.common import page_link, page_setup

REPO_ROOT = Path(__file__).resolve().parent.parent

t = page_setup("glossary.title")


def term_text(term: Term) -> str:
    """Everything a search looks through: the name, the definition and the note, if any."""
    parts = [t(f"glossary.{term.id}_name"), t(f"glossary.{term.id}_def")]
    if term.has_note:
        parts.append(t(f"glossary.{term.id}_note"))
    return "\n".join(parts)


def page_links(term: Term) -> None:
    """Link each page that demonstrates the term; a page not written yet is named, not linked."""
    columns = st.columns([1, 2, 2, 2], vertical_alignment="center")  # label, then up to three pages
    columns[0].caption(t("glossary.see_in"))
    for column, page in zip(columns[1:], term.pages):
        name = t(f"common.nav_{Path(page).stem}")
        with column:
            if (REPO_ROOT / page).exists():
                section = dict(term.sections).get(page)
                page_link(page, name, icon=":material/arrow_forward:",
                          query_params={"section": section} if section else None)
            else:
                st.caption(t("glossary.page_missing", page=name))


def show_term(term: Term) -> None:
    st.subheader(t(f"glossary.{term.id}_name"), anchor=term.id)
    st.markdown(t(f"glossary.{term.id}_def"))
    if term.formula:
        st.latex(term.formula)
    if term.has_note:
        st.info(t(f"glossary.{term.id}_note"), icon=":material/lightbulb:")
    page_links(term)


st.title(t("glossary.title"))
st.markdown(t("glossary.intro"))

query = st.text_input(t("glossary.search"), key="glossary_query", persist_state="session",
                      placeholder=t("glossary.search_placeholder"),
                      help=t("glossary.search_help"))
terms_by_id = {term.id: term for term in TERMS}
ordered = sorted(TERMS, key=lambda term: sort_key(t(f"glossary.{term.id}_name")))
shown = search(query, {term.id: term_text(term) for term in ordered})

st.caption(t("glossary.count", shown=len(shown), total=len(TERMS)))
if not shown:
    st.warning(t("glossary.no_results", query=query.strip()))
for term_id in shown:
    st.divider()
    show_term(terms_by_id[term_id])
