"""Page set-up shared by every page: state, page config, sidebar language switch, translator."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core import jobs
from core.errors import LabError
from core.i18n import LANGUAGES, translate
from core.models import canonical_name, weighted_depth
from ui import state

logger = logging.getLogger(__name__)

_LANG_WIDGET = "_lang_widget"


class Translator:
    """`t("arch.title")` or `t("arch.total", n=3)` in the session's language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def __call__(self, key: str, **params: object) -> str:
        return translate(self.lang, key, **params)


def translator() -> Translator:
    return Translator(state.get_lang())


def _on_language_change() -> None:
    st.session_state[state.LANG] = st.session_state[_LANG_WIDGET]


def _keep_language_in_url(lang: str) -> None:
    """Write the language into `?lang=` on every run, because a page switch drops the query.

    A reload or a shared link starts a new session, which reads its language from the URL.
    """
    if st.query_params.get("lang") != lang:
        st.query_params["lang"] = lang


def _language_switch(t: Translator) -> None:
    st.session_state[_LANG_WIDGET] = st.session_state[state.LANG]
    st.sidebar.radio(
        t("common.language"),
        LANGUAGES,
        key=_LANG_WIDGET,
        format_func=lambda code: t(f"common.lang_{code}"),
        horizontal=True,
        on_change=_on_language_change,
    )


def _model_badge(t: Translator) -> None:
    config = state.get_arch_config()
    name = canonical_name(config) or t("common.custom_model", depth=weighted_depth(config))
    st.sidebar.caption(t("common.sidebar_model", name=name))
    st.sidebar.caption(t("common.sidebar_caption"))


def _leave_pages_folder_mode() -> None:
    """Rerun under app.py's navigation when Streamlit ran this page file in pages-folder mode.

    Until app.py has called `st.navigation` once in this server process, Streamlit serves a
    page's own URL (a shared link, a reload after a restart) from the `pages/` folder: the page
    runs without app.py and the sidebar lists raw file names. Clearing the flag, as
    `st.navigation` itself does, and rerunning the same page runs app.py for it instead.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def page_setup(title_key: str) -> Translator:
    """Prepare a page: shared state, page config, sidebar. Call first on every page.

    It is idempotent, so it works both under app.py's navigation and when Streamlit runs a
    page file on its own (AppTest, or the first run after the server starts, which it turns
    into a run under app.py).
    """
    _leave_pages_folder_mode()
    state.init_state()
    t = translator()
    st.set_page_config(page_title=f"{t(title_key)} · {t('common.app_title')}", layout="wide")
    _keep_language_in_url(t.lang)
    _language_switch(t)
    _model_badge(t)
    return t


def session_id() -> str:
    """Return this browser session's id, for logs; "-" outside a Streamlit run."""
    context = get_script_run_ctx()
    return context.session_id if context is not None else "-"


def show_error(t: Translator, error: Exception) -> None:
    """Show a translated message for `error`; unexpected errors are logged, never shown raw."""
    if isinstance(error, LabError):
        st.error(t(error.key, **error.params))
        return
    logger.error("unexpected error on a page (session %s)", session_id(), exc_info=error)
    st.error(t("errors.unexpected", kind=type(error).__name__))


def guarded(t: Translator, action: Callable[[], object]) -> object | None:
    """Run `action`; on error show the translated message and return None."""
    try:
        return action()
    except Exception as error:  # noqa: BLE001 - every error reaching a page becomes a message
        show_error(t, error)
        return None


def remembered_run_id(param: str, session_key: str) -> str | None:
    """Return the run id in `?param=`, or this session's last one when a page switch dropped the query.

    A valid id is written back to the URL and the session. An invalid one gets a translated message.
    """
    value = st.query_params.get(param) or st.session_state.get(session_key)
    if not value:
        return None
    try:
        run_id = jobs.validate_run_id(value)
    except LabError as error:
        show_error(translator(), error)
        return None
    show_run_id(param, session_key, run_id)
    return run_id


def show_run_id(param: str, session_key: str, run_id: str | None) -> None:
    """Put `run_id` into `?param=` and the session, or remove it from both when it is None."""
    if run_id is None:
        st.query_params.pop(param, None)
        st.session_state.pop(session_key, None)
    else:
        st.query_params[param] = run_id
        st.session_state[session_key] = run_id


def page_link(page_file: str, label: str, icon: str | None = None,
              query_params: dict[str, str] | None = None) -> None:
    """Link to another page by its file (e.g. "pages/gradients.py").

    `st.page_link` only resolves pages known to the current navigation. When a page file runs
    on its own (AppTest, or Streamlit's first run in pages-folder mode) it is not, so the link
    falls back to the page's URL, which both modes serve.
    """
    try:
        st.page_link(page_file, label=label, icon=icon, query_params=query_params)
    except StreamlitPageNotFoundError:
        url_path = page_file.rsplit("/", 1)[-1].removesuffix(".py")
        query = f"?{urllib.parse.urlencode(query_params)}" if query_params else ""
        st.markdown(f"[{label}](/{url_path}{query})")
