"""The dataset, preprocessing and weights widgets under AppTest, in both languages."""

import json

import pytest
import torch
import torchvision
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP_TIMEOUT_S


def dataset_script():
    import json

    import streamlit as st

    from ui.common import translator
    from ui.dataset_picker import pick_dataset, pick_preprocessing

    t = translator()
    spec = pick_dataset(t, key="data")
    st.session_state["picked_spec"] = json.dumps(spec)
    if spec is not None:
        st.session_state["picked_prep"] = json.dumps(pick_preprocessing(t, spec, key="prep"))


def weights_script():
    import json

    import streamlit as st

    from core.models import imagenet_config
    from ui.common import translator
    from ui.weights_picker import pick_weights

    t = translator()
    st.session_state["picked_weights"] = json.dumps(pick_weights(t, imagenet_config(18, num_classes=10)))


def run_script(script, lang: str) -> AppTest:
    at = AppTest.from_function(script, default_timeout=APP_TIMEOUT_S)
    at.session_state["lang"] = lang
    at.run()
    return at


@pytest.mark.parametrize("lang, label", [("es", "Clase"), ("en", "Class")])
def test_digits_preview_and_spec(lang, label):
    at = run_script(dataset_script, lang)
    assert not at.exception
    spec = json.loads(at.session_state["picked_spec"])
    assert spec["source"] == "digits"
    table = at.dataframe[0].value
    assert table[label].tolist() == [str(d) for d in range(10)]
    assert table.iloc[:, 2].sum() + table.iloc[:, 3].sum() == 1797
    prep = json.loads(at.session_state["picked_prep"])
    assert prep["input_size"] == 32
    assert prep["mean"][0] == pytest.approx(0.305, abs=0.01)  # measured on the digits' training split


def test_class_subset_goes_into_the_spec():
    at = run_script(dataset_script, "es")
    at.multiselect(key="data_classes").set_value(["5", "6", "7", "8", "9"]).run()
    assert not at.exception
    assert json.loads(at.session_state["picked_spec"])["classes"] == ["5", "6", "7", "8", "9"]


def test_missing_folder_shows_message():
    at = run_script(dataset_script, "en")
    at.radio(key="data_source").set_value("folder").run()
    at.text_input(key="data_folder").input("/nonexistent/dataset").run()
    assert not at.exception
    assert any("/nonexistent/dataset" in error.value for error in at.error)
    assert json.loads(at.session_state["picked_spec"]) is None


def test_cifar_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path))
    at = run_script(dataset_script, "es")
    at.radio(key="data_source").set_value("cifar10").run()
    assert not at.exception
    assert any("cifar-10-python.tar.gz" in error.value for error in at.error)


def test_imagenet_weights_offline_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    at = run_script(weights_script, "en")
    at.radio(key="weights_kind").set_value("imagenet").run()
    assert not at.exception
    assert any("resnet18-f37072fd.pth" in warning.value for warning in at.warning)
    assert json.loads(at.session_state["picked_weights"]) == {"kind": "none"}

    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    at.run()
    assert not at.exception
    assert json.loads(at.session_state["picked_weights"])["kind"] == "imagenet"
    assert any("fc.weight" in info.value for info in at.info)  # the 1000-class head is replaced
