"""Arquitectura page under AppTest, in both languages: numbers shown, views, errors, cache, shared state."""

import pytest

import core.summary
from core.models import cifar_config, imagenet_config
from tests.app.conftest import open_page
from ui.arch_cache import cached_summary

PAGE = "pages/architecture.py"


def _metrics(at) -> list[str]:
    return [metric.value for metric in at.metric]


def _errors(at) -> list[str]:
    return [error.value for error in at.error]


@pytest.mark.parametrize("lang, title, params_label", [("es", "Arquitectura", "Parámetros"),
                                                       ("en", "Architecture", "Parameters")])
def test_renders_resnet18_by_default(lang, title, params_label):
    at = open_page(PAGE, lang=lang)
    at.run()
    assert not at.exception
    assert at.title[0].value == title
    assert at.subheader[0].value == "ResNet-18"
    assert "11,689,512" in _metrics(at)
    assert at.metric[0].label == params_label
    assert at.session_state["arch_config"] == imagenet_config(18).to_dict()


def test_depth_152_shows_torchvision_count_and_is_shared():
    at = open_page(PAGE, lang="en")
    at.run()
    at.selectbox(key="arch_imagenet_depth").set_value(152).run()
    assert not at.exception
    assert at.selectbox(key="arch_block").value == "bottleneck"
    assert "60,192,808" in _metrics(at)
    assert "152" in _metrics(at)
    assert at.session_state["arch_config"]["stage_blocks"] == [3, 8, 36, 3]


@pytest.mark.parametrize("lang, phrase", [("es", "es ResNet-34"), ("en", "it is ResNet-34")])
def test_resnet50_counts_with_basic_blocks_say_resnet34(lang, phrase):
    at = open_page(PAGE, lang=lang)
    at.run()
    at.selectbox(key="arch_imagenet_depth").set_value(50).run()
    at.selectbox(key="arch_block").set_value("basic").run()
    assert not at.exception
    assert at.subheader[0].value == "ResNet-34"
    assert "21,797,672" in _metrics(at)
    assert any(phrase in info.value for info in at.info)


def test_cifar_family_uses_option_a_counts():
    at = open_page(PAGE, lang="en")
    at.run()
    at.radio(key="arch_family").set_value("cifar").run()
    assert at.radio(key="arch_shortcut").value == "zero_pad"
    assert "269,722" in _metrics(at)
    at.selectbox(key="arch_cifar_preset").set_value(56).run()
    assert not at.exception
    assert at.subheader[0].value == "ResNet-56"
    assert "853,018" in _metrics(at)


def test_cifar_custom_n():
    at = open_page(PAGE, lang="es")
    at.run()
    at.radio(key="arch_family").set_value("cifar").run()
    at.selectbox(key="arch_cifar_preset").set_value(0).run()
    at.number_input(key="arch_cifar_n").set_value(4).run()
    assert not at.exception
    assert at.subheader[0].value == "ResNet-26"


def test_plain_twin_and_custom_stages():
    at = open_page(PAGE, lang="en")
    at.run()
    at.toggle(key="arch_skip").set_value(False).run()
    assert at.subheader[0].value == "Plain-18"
    at.toggle(key="arch_custom_on").set_value(True).run()
    at.text_input(key="arch_custom_text").set_value("1, 1").run()
    assert not at.exception
    assert "6" in _metrics(at)  # stem conv + 2 blocks × 2 convs + fc
    assert at.session_state["arch_config"]["stage_blocks"] == [1, 1]


@pytest.mark.parametrize("lang, widget, value, fragment", [
    ("es", "arch_custom_text", "3, 0, 2", "Número de bloques por etapa no válido"),
    ("en", "arch_custom_text", "tres, cuatro", "cannot be read"),
    ("en", "arch_input_size", 16, "An input of 16 px"),
    ("es", "arch_base_width", 5000, "Anchura base no válida: 5000"),
])
def test_bad_input_shows_a_translated_error(lang, widget, value, fragment):
    at = open_page(PAGE, lang=lang)
    at.run()
    if widget == "arch_custom_text":
        at.toggle(key="arch_custom_on").set_value(True).run()
        at.text_input(key=widget).set_value(value).run()
    else:
        at.number_input(key=widget).set_value(value).run()
    assert not at.exception
    assert len(at.error) == 1
    assert fragment in at.error[0].value
    assert at.session_state["arch_config"] == imagenet_config(18).to_dict()  # the bad config is not shared


@pytest.mark.parametrize("lang", ["es", "en"])
def test_every_view_renders(lang):
    at = open_page(PAGE, lang=lang)
    at.run()
    assert len(at.get("graphviz_chart")) == 1
    at.radio(key="arch_view").set_value("table").run()
    assert not at.exception
    layers = at.dataframe[0].value
    assert layers.iloc[:, 5].sum() == 11_689_512
    at.radio(key="arch_view").set_value("charts").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    at.radio(key="arch_view").set_value("compare").run()
    at.selectbox(key="arch_compare").set_value("r50").run()
    assert not at.exception
    assert {"11,689,512", "25,557,032"} <= set(_metrics(at))


def test_diagram_expands_blocks():
    at = open_page(PAGE, lang="en")
    at.run()
    at.multiselect(key="arch_expanded_stages").set_value(["layer4"]).run()
    at.multiselect(key="arch_expanded_blocks").set_value(["layer4.0"]).run()
    assert not at.exception
    source = at.get("graphviz_chart")[0].proto.spec
    assert "downsample.0 · Conv2d 1×1 /2, 256→512" in source


def test_switching_views_does_not_rebuild(monkeypatch):
    builds = []
    original = core.summary.build_resnet
    monkeypatch.setattr(core.summary, "build_resnet", lambda config: builds.append(config) or original(config))
    cached_summary.clear()

    at = open_page(PAGE, lang="es", arch_config=imagenet_config(152).to_dict())
    at.run()
    assert len(builds) == 1
    for view in ("table", "charts", "diagram", "table"):
        at.radio(key="arch_view").set_value(view).run()
    assert not at.exception
    assert len(builds) == 1


def test_form_follows_a_config_set_elsewhere():
    at = open_page(PAGE, lang="en", arch_config=cifar_config(56).to_dict())
    at.run()
    assert not at.exception
    assert at.radio(key="arch_family").value == "cifar"
    assert at.subheader[0].value == "ResNet-56"
    assert "853,018" in _metrics(at)


def test_custom_stages_start_from_the_current_network():
    at = open_page(PAGE, lang="es")
    at.run()
    at.selectbox(key="arch_imagenet_depth").set_value(50).run()
    at.toggle(key="arch_custom_on").set_value(True).run()
    assert at.text_input(key="arch_custom_text").value == "3, 4, 6, 3"
    assert at.subheader[0].value == "ResNet-50"
    at.text_input(key="arch_custom_text").set_value("").run()
    assert not at.exception
    assert "No puedo leer" in at.error[0].value
