"""TTA page in a real browser: upload a checkpoint and images through the file choosers."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from core.i18n import translate
from core.models import build_resnet, cifar_config
from tests.browser.conftest import screenshot, wait_for_app

TIMEOUT_MS = 60_000


@pytest.fixture
def upload_files(tmp_path):
    """A tiny CIFAR ResNet checkpoint, a photo-like PNG and a text file posing as a JPEG."""
    model = build_resnet(cifar_config(8, base_width=4, num_classes=10, init="default"), seed=0)
    checkpoint = tmp_path / "tiny-resnet.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(checkpoint))

    rows = np.linspace(0, 255, 48)[:, None]
    cols = np.linspace(0, 255, 80)[None, :]
    pixels = np.stack([np.broadcast_to(rows, (48, 80)), np.broadcast_to(cols, (48, 80)),
                       np.full((48, 80), 128.0)], axis=-1).astype(np.uint8)
    image = tmp_path / "degradado.png"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())

    fake = tmp_path / "no-es-foto.jpg"
    fake.write_text("solo texto", encoding="utf-8")
    return checkpoint, image, fake


def file_input(page, label: str):
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text=label)
    return uploader.locator("input[type='file']")


def test_upload_checkpoint_and_images(streamlit_server, browser_page, upload_files):
    checkpoint, image, fake = upload_files
    page = browser_page
    page.goto(f"{streamlit_server}/tta?lang=es", timeout=TIMEOUT_MS)
    # The first run after the server starts imports torch: wait for the page's own heading.
    page.get_by_role("heading", name=translate("es", "tta.title")).wait_for(timeout=TIMEOUT_MS)
    wait_for_app(page)

    page.get_by_text(translate("es", "tta.model_src_checkpoint"), exact=True).click()
    wait_for_app(page)
    file_input(page, translate("es", "tta.checkpoint_upload")).set_input_files(str(checkpoint))
    wait_for_app(page)
    inferred = translate("es", "tta.checkpoint_inferred", stages="1 · 1 · 1", block="basic", stem="cifar", classes=10)
    page.get_by_text(inferred).wait_for(timeout=TIMEOUT_MS)

    page.get_by_text(translate("es", "tta.src_upload"), exact=True).click()
    wait_for_app(page)
    file_input(page, translate("es", "tta.upload_label")).set_input_files([str(image), str(fake)])
    wait_for_app(page)

    page.get_by_text(translate("es", "tta.metric_tta"), exact=True).first.wait_for(timeout=TIMEOUT_MS)
    alerts = page.locator("[data-testid='stAlert']").all_inner_texts()
    assert any("no-es-foto.jpg" in alert for alert in alerts), alerts
    page.get_by_text(translate("es", "tta.input_caption", size=32)).wait_for(timeout=TIMEOUT_MS)
    thumbnails = page.locator("[data-testid='stImage'], [data-testid='stImageContainer']")
    assert thumbnails.count() >= 4  # original, model input, identity and hflip views
    screenshot(page, "tta-upload")
