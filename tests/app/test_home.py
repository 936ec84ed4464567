"""Home page under AppTest, in both languages."""

import pytest
import torch

from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP_TIMEOUT_S, REPO_ROOT, open_page


@pytest.mark.parametrize("lang, heading", [("es", "Entorno"), ("en", "Environment")])
def test_home_renders(lang, heading):
    at = open_page("pages/home.py", lang)
    at.run()
    assert not at.exception
    assert heading in [header.value for header in at.header]
    assert torch.__version__ in [metric.value for metric in at.metric]


def test_home_lists_weight_files():
    at = open_page("pages/home.py")
    at.run()
    table = at.dataframe[0].value
    assert "resnet50-11ad3fa6.pth" in table.iloc[:, 2].tolist()


def test_language_switch_turns_page_english():
    at = open_page("pages/home.py")
    at.run()
    assert "Entorno" in [header.value for header in at.header]
    at.sidebar.radio[0].set_value("en").run()
    assert not at.exception
    assert "Environment" in [header.value for header in at.header]
    assert at.session_state["lang"] == "en"


def test_app_navigation_runs():
    at = open_page("app.py")
    at.run()
    assert not at.exception


def test_language_written_to_url():
    at = open_page("pages/home.py", "en")
    at.run()
    assert at.query_params["lang"] in ("en", ["en"])


def test_language_read_from_url_in_new_session():
    at = AppTest.from_file(str(REPO_ROOT / "pages/home.py"), default_timeout=APP_TIMEOUT_S)
    at.query_params["lang"] = "en"
    at.run()
    assert at.session_state["lang"] == "en"
    assert "Environment" in [header.value for header in at.header]
