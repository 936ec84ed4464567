"""AppTest helpers: page files are resolved from the repository root, whatever the test's folder."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_TIMEOUT_S = 120


def open_page(relative_path: str, lang: str = "es", **session: object) -> AppTest:
    """Return an AppTest for `pages/x.py` (or `app.py`) with the language and any state preset."""
    at = AppTest.from_file(str(REPO_ROOT / relative_path), default_timeout=APP_TIMEOUT_S)
    at.session_state["lang"] = lang
    for key, value in session.items():
        at.session_state[key] = value
    return at


@pytest.fixture
def page():
    return open_page
