"""TTA page under AppTest: models from a run or a checkpoint, uploads, views, merge modes, errors."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors

from core import checkpoints, jobs, tta
from core.checkpoints import read_run_config
from core.data import DatasetSpec, Preprocessing, load_dataset
from core.i18n import translate
from core.images import decode_image
from core.models import build_resnet, cifar_config
from tests.app.conftest import open_page

PAGE = "pages/tta.py"
CLASS_NAMES = [str(digit) for digit in range(10)]
TINY_CONFIG = cifar_config(8, base_width=4, num_classes=10, init="default")
PREPROCESSING = Preprocessing(input_size=32, resize="stretch", mean=(0.5,) * 3, std=(0.25,) * 3)


def tiny_model() -> torch.nn.Module:
    model = build_resnet(TINY_CONFIG, seed=3)
    generator = torch.Generator().manual_seed(4)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def image_bytes(height: int, width: int, seed: int, image_format: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def finished_run(tmp_path, monkeypatch):
    """A done "train" run on the digits set with a tiny model, in a private runs folder."""
    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(tmp_path / "runs"))
    store = jobs.Store()
    spec = {"source": "digits", "val_fraction": 0.2, "seed": 0}
    run_id = store.submit("train", {"data": spec}, name="digits-tiny", device="cpu")
    run_dir = store.run_dir(run_id)
    checkpoints.write_run_config(run_dir, {
        "architecture": TINY_CONFIG.to_dict(),
        "data": spec,
        "class_names": CLASS_NAMES,
        "preprocessing": PREPROCESSING.to_dict(),
    })
    checkpoints.save_weights(tiny_model(), run_dir / checkpoints.MODEL_FILE)
    store.finish(run_id, jobs.DONE)
    return run_id


@pytest.fixture
def no_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(tmp_path / "runs"))


def texts(at) -> str:
    parts = [element.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for element in getattr(at, kind)]
    return "\n".join(str(part) for part in parts)


def metric_values(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


@pytest.mark.parametrize("lang", ["es", "en"])
def test_no_model_shows_offline_message(no_runs, lang):
    at = open_page(PAGE, lang)
    at.run()
    assert not at.exception
    assert at.title[0].value == translate(lang, "tta.title")
    assert "resnet18-f37072fd.pth" in texts(at)  # the offline message names the weights file
    assert translate(lang, "tta.need_model") in texts(at)


@pytest.mark.parametrize("lang", ["es", "en"])
def test_run_model_on_sample_photo(finished_run, lang):
    at = open_page(PAGE, lang)
    at.run()
    assert not at.exception
    assert at.radio(key="tta_model_source").value == "run"
    at.radio(key="tta_image_source").set_value("sample").run()
    metrics = metric_values(at)
    identity_label = translate(lang, "tta.metric_identity")
    assert metrics[identity_label] in CLASS_NAMES

    # The page's identity metric is the plain prediction of the run's model on the decoded cat.
    from core.data import sample_photos

    cat = next(photo for photo in sample_photos() if photo.name == "chelsea")
    image = decode_image(cat.data, cat.file_name).image
    bundle = tta.bundle_from_run(jobs.run_dir(finished_run))
    with torch.inference_mode():
        plain = bundle.model(bundle.preprocessing(image)[None])[0]
    assert metrics[identity_label] == CLASS_NAMES[int(plain.argmax())]
    # original, exact model input, and one thumbnail per view (identity and hflip by default)
    assert len(at.image) == 2 + 2


def test_upload_and_choose_views(finished_run):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_image_source").set_value("upload").run()
    at.file_uploader(key="tta_uploads").set_value([
        ("wide.png", image_bytes(20, 90, seed=1), "image/png"),
        ("tall.png", image_bytes(70, 15, seed=2), "image/png"),
    ]).run()
    at.multiselect(key="tta_families").set_value(["identity", "hflip", "ten_crop"]).run()
    assert not at.exception
    assert len(at.tabs) == 2
    # identity + hflip + 10 crops, then the original and the model input, in each tab
    for tab in at.tabs:
        assert len(tab.image) == 2 + 12
    assert translate("es", "tta.views_count", views=12, merged=12) in texts(at)


@pytest.mark.parametrize("mode", tta.MERGE_MODES)
def test_merge_modes_match_core(finished_run, mode):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_image_source").set_value("sample").run()
    at.multiselect(key="tta_families").set_value(["hflip", "scales", "rotations"]).run()
    at.radio(key="tta_merge").set_value(mode).run()
    assert not at.exception

    from core.data import sample_photos

    cat = next(photo for photo in sample_photos() if photo.name == "chelsea")
    image = decode_image(cat.data, cat.file_name).image
    bundle = tta.bundle_from_run(jobs.run_dir(finished_run))
    prediction = tta.predict_tta(bundle.model, image, bundle.preprocessing, ["hflip", "scales", "rotations"], mode)
    expected_top = CLASS_NAMES[int(prediction.merged.argmax())]
    assert metric_values(at)[translate("es", "tta.metric_tta")] == expected_top
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert translate("es", f"tta.merge_{mode}") in chart["layout"]["title"]["text"]
    merged_trace = chart["data"][1]
    assert merged_trace["x"][-1] == pytest.approx(float(prediction.merged.max()), abs=1e-5)


def test_bad_file_named_rest_analysed(finished_run):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_image_source").set_value("upload").run()
    at.file_uploader(key="tta_uploads").set_value([
        ("notas.txt", b"esto no es una imagen", "text/plain"),
        ("cut.png", image_bytes(40, 40, seed=3)[:200], "image/png"),
        ("good.png", image_bytes(40, 40, seed=4), "image/png"),
    ]).run()
    assert not at.exception
    errors = [error.value for error in at.error]
    assert any("notas.txt" in error for error in errors)
    assert any("cut.png" in error for error in errors)
    assert len(at.image) == 2 + 2  # good.png is analysed


def test_english_labels(finished_run):
    at = open_page(PAGE, "en")
    at.run()
    assert not at.exception
    headers = [header.value for header in at.header]
    assert translate("en", "tta.views_header") in headers
    assert translate("en", "tta.metric_agreement") in metric_values(at)


def checkpoint_bytes() -> bytes:
    return save_safetensors({name: tensor.contiguous() for name, tensor in tiny_model().state_dict().items()})


def test_uploaded_checkpoint(no_runs):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_model_source").set_value("checkpoint").run()
    upload = ("tiny.safetensors", checkpoint_bytes(), "application/octet-stream")
    at.file_uploader(key="tta_checkpoint").set_value(upload).run()
    assert not at.exception
    inferred = translate("es", "tta.checkpoint_inferred", stages="1 · 1 · 1", block="basic", stem="cifar", classes=10)
    assert inferred in texts(at)
    assert metric_values(at)[translate("es", "tta.metric_identity")] in CLASS_NAMES


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_checkpoint_refused(no_runs):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_model_source").set_value("checkpoint").run()
    payload = pickle.dumps({"fc.weight": _Payload()}, protocol=2)
    at.file_uploader(key="tta_checkpoint").set_value(("evil.pt", payload, "application/octet-stream")).run()
    assert not at.exception
    assert any("evil.pt" in error.value for error in at.error)
    assert not at.metric


def test_non_resnet_checkpoint_explained(no_runs):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_model_source").set_value("checkpoint").run()
    data = save_safetensors({"encoder.weight": torch.zeros(4, 4)})
    at.file_uploader(key="tta_checkpoint").set_value(("mlp.safetensors", data, "application/octet-stream")).run()
    assert not at.exception
    expected = translate("es", "data.err_not_resnet", reason="conv1.weight / fc.weight")
    assert expected in [error.value for error in at.error]
    assert not at.metric


def test_evaluation_on_run_validation(finished_run):
    at = open_page(PAGE)
    at.run()
    at.slider(key="tta_eval_limit").set_value(10).run()
    at.button(key="tta_eval_run").click().run()
    assert not at.exception
    metrics = metric_values(at)
    assert metrics[translate("es", "tta.eval_images")] == "10"
    table = at.dataframe[-1].value
    assert len(table) == 2  # identity alone, identity + hflip


def test_evaluation_on_a_zip(finished_run):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for digit in ("3", "7"):
            for index in range(3):
                archive.writestr(f"digits/{digit}/{index}.png", image_bytes(12, 12, seed=int(digit) * 10 + index))
        archive.writestr("digits/gato/0.png", image_bytes(12, 12, seed=99))
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_eval_source").set_value("zip").run()
    at.file_uploader(key="tta_eval_zip").set_value(("digits.zip", buffer.getvalue(), "application/zip")).run()
    assert "gato" in texts(at)  # a folder that is no class of the model is named
    at.button(key="tta_eval_run").click().run()
    assert not at.exception
    assert metric_values(at)[translate("es", "tta.eval_images")] == "6"


def test_camera_photo(finished_run):
    at = open_page(PAGE)
    at.run()
    at.radio(key="tta_image_source").set_value("camera").run()
    assert translate("es", "tta.waiting_camera") in texts(at)
    photo = ("foto.jpg", image_bytes(48, 64, seed=5, image_format="JPEG"), "image/jpeg")
    at.camera_input(key="tta_camera").set_value(photo).run()
    assert not at.exception
    assert len(at.image) == 2 + 2
    captions = [caption for image in at.image for caption in image.captions]
    assert translate("es", "tta.original_caption", width=64, height=48) in captions


def test_uploads_survive_page_switch(finished_run):
    at = open_page("app.py")
    at.run()
    at.switch_page(PAGE).run()
    at.radio(key="tta_image_source").set_value("upload").run()
    at.file_uploader(key="tta_uploads").set_value([
        ("wide.png", image_bytes(20, 90, seed=1), "image/png"),
        ("tall.png", image_bytes(70, 15, seed=2), "image/png"),
    ]).run()
    assert len(at.tabs) == 2
    at.switch_page("pages/glossary.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.radio(key="tta_image_source").value == "upload"
    assert len(at.tabs) == 2
    assert translate("es", "tta.kept_uploads", count=2, names="wide.png, tall.png") in texts(at)
    at.button(key="tta_forget_uploads").click().run()
    assert len(at.tabs) == 0
    assert translate("es", "tta.waiting_upload") in texts(at)


def test_run_model_shows_validation_images(finished_run):
    at = open_page(PAGE, "en")
    at.run()
    assert not at.exception
    assert at.radio(key="tta_image_source").value == "run_val"
    assert len(at.tabs) == 2  # the first two validation images offered, one tab each

    split = load_dataset(DatasetSpec.from_dict(read_run_config(jobs.run_dir(finished_run))["data"])).val
    first = tta.pick_evenly(split.labels.tolist(), 12)[0]
    bundle = tta.bundle_from_run(jobs.run_dir(finished_run))
    image = decode_image(png_bytes(split.load(first)), "val.png").image
    with torch.inference_mode():
        plain = bundle.model(bundle.preprocessing(image)[None])[0]
    identity_label = translate("en", "tta.metric_identity")
    assert at.tabs[0].get("metric")[0].label == identity_label
    assert at.tabs[0].get("metric")[0].value == CLASS_NAMES[int(plain.argmax())]


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
