"""A page's settings survive a visit to another page of the same session."""

from tests.app.conftest import open_page


def test_tta_settings_survive_glossary_visit():
    at = open_page("app.py", "en")
    at.run()
    at.switch_page("pages/tta.py").run()
    at.radio(key="tta_merge").set_value("max").run()
    at.slider(key="tta_topk").set_value(3).run()
    assert not at.exception

    at.switch_page("pages/glossary.py").run()
    assert not at.exception
    at.text_input(key="glossary_query").set_value("warmup").run()
    at.switch_page("pages/tta.py").run()
    assert not at.exception
    assert at.radio(key="tta_merge").value == "max"
    assert at.slider(key="tta_topk").value == 3

    at.switch_page("pages/glossary.py").run()
    assert at.text_input(key="glossary_query").value == "warmup"
