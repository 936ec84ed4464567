"""Facts for the Home page's environment panel: versions, device, cached ImageNet weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import get_model_weights

from core.device import describe_device

IMAGENET_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class WeightFile:
    model: str  # torchvision builder name, e.g. "resnet50"
    weights: str  # enum member, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    file_name: str  # what torch.hub saves it as under <torch hub dir>/checkpoints
    path: Path
    cached: bool


def hub_checkpoint_dir() -> Path:
    """Return the folder where torch.hub keeps downloaded weights (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weight_files() -> list[WeightFile]:
    """List every torchvision ImageNet ResNet weight file and whether it is in the local cache."""
    folder = hub_checkpoint_dir()
    files = []
    for model in IMAGENET_MODELS:
        for weights in get_model_weights(model):
            file_name = os.path.basename(urlparse(weights.url).path)
            path = folder / file_name
            files.append(WeightFile(model, f"{type(weights).__name__}.{weights.name}", file_name, path, path.is_file()))
    return files


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "torchvision": torchvision.__version__}


def environment_report() -> dict:
    return {"versions": versions(), "device": describe_device(), "weights": imagenet_weight_files()}
