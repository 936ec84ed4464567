"""Initial weights: torchvision's ImageNet ResNets and uploaded checkpoints, loaded safely.

ImageNet weights come from torchvision's weights API (e.g. "ResNet50_Weights.IMAGENET1K_V2").
torch.hub keeps them as <torch hub dir>/checkpoints/<file name of the weights' URL>
(TORCH_HOME moves the hub dir). `load_imagenet_state_dict` reads that file when it is there,
downloads it with a progress callback when allowed, and otherwise raises a LabError that
names the file and the folder to put it in.

Uploaded checkpoints (.pth/.pt/.bin or .safetensors) are never unpickled freely: torch files go
through `torch.load(weights_only=True)`, which rejects anything but tensors and plain
containers, and safetensors files contain no code at all.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from core.data import Preprocessing, imagenet_preprocessing
from core.environment import hub_checkpoint_dir
from core.errors import LabError
from core.models import IMAGENET_STAGES, ResNetConfig, build_resnet, imagenet_config

logger = logging.getLogger(__name__)

# The best ImageNet weights torchvision 0.29 ships for each depth (its DEFAULT members).
DEFAULT_IMAGENET_WEIGHTS = {
    18: "ResNet18_Weights.IMAGENET1K_V1",
    34: "ResNet34_Weights.IMAGENET1K_V1",
    50: "ResNet50_Weights.IMAGENET1K_V2",
    101: "ResNet101_Weights.IMAGENET1K_V2",
    152: "ResNet152_Weights.IMAGENET1K_V2",
}
IMAGENET_WEIGHT_NAMES = (
    "ResNet18_Weights.IMAGENET1K_V1",
    "ResNet34_Weights.IMAGENET1K_V1",
    "ResNet50_Weights.IMAGENET1K_V1",
    "ResNet50_Weights.IMAGENET1K_V2",
    "ResNet101_Weights.IMAGENET1K_V1",
    "ResNet101_Weights.IMAGENET1K_V2",
    "ResNet152_Weights.IMAGENET1K_V1",
    "ResNet152_Weights.IMAGENET1K_V2",
)

# Key prefixes added by wrappers: nn.DataParallel / DistributedDataParallel ("module.") and
# torch.compile ("_orig_mod."). They are stripped when every key carries them.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Containers other tools save around the state dict (Lightning, many training scripts).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
HEAD_PREFIX = "fc."
# Buffers/parameters a checkpoint may lack without changing the network it describes:
# BatchNorm's step counter, and the Fixup multipliers (1 at init).
OPTIONAL_SUFFIXES = ("num_batches_tracked", "branch_scale")
MAX_NAMES_IN_MESSAGE = 6
DOWNLOAD_CHUNK_BYTES = 1 << 20

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)


# --------------------------------------------------------------------------------------------
# torchvision ImageNet weights


def get_weights(name: str) -> Any:
    """Return the torchvision weights enum member for a name like "ResNet50_Weights.IMAGENET1K_V2"."""
    if name not in IMAGENET_WEIGHT_NAMES:
        raise LabError("data.err_weights_name", value=name, allowed=", ".join(IMAGENET_WEIGHT_NAMES))
    from torchvision.models import get_weight

    return get_weight(name)


def weights_file_name(name: str) -> str:
    """File name torch.hub uses for these weights, e.g. "resnet50-11ad3fa6.pth"."""
    return os.path.basename(urlparse(get_weights(name).url).path)


def weights_path(name: str) -> Path:
    return hub_checkpoint_dir() / weights_file_name(name)


def is_cached(name: str) -> bool:
    return weights_path(name).is_file()


def weights_depth(name: str) -> int:
    """18, 34, 50, 101 or 152, from the enum class name "ResNet<depth>_Weights"."""
    return int(re.match(r"ResNet(\d+)_Weights", name).group(1))


def weights_config(name: str, **overrides: Any) -> ResNetConfig:
    """Return the architecture these weights fit: torchvision's ResNet-<depth> (1000 classes, 224 px)."""
    return imagenet_config(weights_depth(name), **overrides)


def weights_preprocessing(name: str) -> Preprocessing:
    """torchvision's evaluation transform of these weights as a Preprocessing (resize, crop, stats)."""
    transform = get_weights(name).transforms()
    return imagenet_preprocessing(
        crop_size=int(transform.crop_size[0]),
        resize_size=int(transform.resize_size[0]),
        interpolation=str(transform.interpolation.value),
    )


def weights_categories(name: str) -> list[str]:
    """Return the 1,000 ImageNet class names in output order, from the weights' metadata."""
    return list(get_weights(name).meta["categories"])


def weights_info(name: str) -> dict:
    """Facts for the UI: file, folder, cached, size, parameter count, published top-1 accuracy."""
    weights = get_weights(name)
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return {
        "name": name,
        "file": weights_file_name(name),
        "folder": str(hub_checkpoint_dir()),
        "url": weights.url,
        "cached": is_cached(name),
        "size_mb": weights.meta.get("_file_size"),
        "num_params": weights.meta.get("num_params"),
        "acc_at_1": metrics.get("acc@1"),
    }


def load_imagenet_state_dict(name: str, allow_download: bool = False,
                             progress: ProgressCallback | None = None) -> dict[str, torch.Tensor]:
    """Read the weights' state dict from the torch hub cache, downloading it first when allowed.

    Raises LabError "data.err_weights_offline" naming the file and folder when the file is not
    cached and downloading is off or fails.
    """
    weights = get_weights(name)
    path = weights_path(name)
    if not path.is_file():
        if not allow_download:
            raise LabError("data.err_weights_offline", file=path.name, folder=str(path.parent), url=weights.url)
        try:
            download_file(weights.url, path, progress)
        except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors
            logger.info("download of %s failed: %s", weights.url, error)
            raise LabError("data.err_weights_offline", file=path.name, folder=str(path.parent),
                           url=weights.url) from error
    logger.info("loading ImageNet weights %s from %s", name, path)
    return read_checkpoint(path.read_bytes(), path.name)


def download_file(url: str, destination: Path, progress: ProgressCallback | None = None,
                  timeout_s: float = 30.0) -> Path:
    """Stream `url` to `destination`, reporting progress, and check torch.hub's hash prefix.

    torchvision file names carry the first hex digits of the file's SHA-256
    ("resnet50-11ad3fa6.pth"); a mismatch deletes the download and raises LabError. The file
    appears under its final name only when complete.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(r"-([a-f0-9]+)\.", destination.name)  # torch.hub.HASH_REGEX
    expected_prefix = match.group(1) if match else None

    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(prefix=destination.name + ".", suffix=".partial", dir=destination.parent)
    try:
        with os.fdopen(handle, "wb") as sink, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                sink.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if expected_prefix and not digest.hexdigest().startswith(expected_prefix):
            raise LabError("data.err_weights_hash", file=destination.name, expected=expected_prefix,
                           actual=digest.hexdigest()[: len(expected_prefix)])
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    logger.info("downloaded %s to %s", url, destination)
    return destination


# --------------------------------------------------------------------------------------------
# Reading checkpoints safely


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    header_size = struct.unpack("<Q", data[:8])[0]
    return 2 <= header_size <= len(data) - 8 and data[8:9] == b"{"


def read_checkpoint(source: Any, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Read a state dict (tensors on the CPU) from checkpoint bytes, without running pickled code.

    The format is recognised from the content: safetensors (8-byte header length then JSON),
    a torch zip archive ("PK"), or a legacy torch pickle. Torch files are read with
    `weights_only=True`; a file that needs anything else (a pickled nn.Module, a payload) is
    rejected with "data.err_checkpoint_unsafe".
    """
    from core.images import read_bytes

    data = read_bytes(source)
    if not data:
        raise LabError("data.err_checkpoint_empty", name=name)

    if _is_safetensors(data):
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return dict(load_safetensors(data))
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise LabError("data.err_checkpoint_corrupt", name=name, detail=str(error)[:200]) from error

    if not (data.startswith(b"PK\x03\x04") or data[:1] == b"\x80"):
        raise LabError("data.err_checkpoint_format", name=name)
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(error)
        if "weights_only" in text or "Weights only load failed" in text or "Unsupported" in text:
            logger.warning("rejected checkpoint %s: %s", name, text.splitlines()[0] if text else type(error).__name__)
            raise LabError("data.err_checkpoint_unsafe", name=name) from error
        raise LabError("data.err_checkpoint_corrupt", name=name, detail=text[:200]) from error
    return _find_state_dict(loaded, name)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _find_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
    raise LabError("data.err_checkpoint_no_state_dict", name=name, keys=", ".join(STATE_DICT_KEYS))


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove "module." / "_orig_mod." while every key starts with one; returns (dict, prefixes removed)."""
    current = dict(state_dict)
    removed: list[str] = []
    changed = True
    while changed and current:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in current):
                current = {key[len(prefix):]: value for key, value in current.items()}
                removed.append(prefix)
                changed = True
    return current, removed


# --------------------------------------------------------------------------------------------
# Loading into a model


@dataclass(frozen=True)
class HeadChange:
    """A head tensor the checkpoint could not provide: left as the model initialised it."""

    key: str  # e.g. "fc.weight"
    checkpoint_shape: tuple[int, ...] | None  # None when the checkpoint has no head
    model_shape: tuple[int, ...]


@dataclass(frozen=True)
class LoadReport:
    """Summary of a `load_into_model` call."""

    loaded: int  # tensors copied from the checkpoint
    replaced_head: list[HeadChange] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "loaded": self.loaded,
            "replaced_head": [
                {"key": h.key, "checkpoint_shape": list(h.checkpoint_shape) if h.checkpoint_shape else None,
                 "model_shape": list(h.model_shape)} for h in self.replaced_head],
            "stripped_prefixes": list(self.stripped_prefixes),
        }


def _shorten(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    hidden = len(names) - MAX_NAMES_IN_MESSAGE
    return shown if hidden <= 0 else f"{shown} (+{hidden})"


def _plan_load(target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor],
               name: str) -> tuple[dict[str, torch.Tensor], list[HeadChange]]:
    """(tensors to copy, head changes) for loading `source` into a model whose state dict is `target`.

    Raises "data.err_checkpoint_mismatch" naming the keys on any difference outside the head.
    """
    replaced: list[HeadChange] = []
    for key, tensor in target.items():
        if not key.startswith(HEAD_PREFIX):
            continue
        if key not in source:
            replaced.append(HeadChange(key, None, tuple(tensor.shape)))
        elif source[key].shape != tensor.shape:
            replaced.append(HeadChange(key, tuple(source[key].shape), tuple(tensor.shape)))
    replaced_keys = {h.key for h in replaced}

    missing = [k for k in target if k not in source and k not in replaced_keys and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in source if k not in target]
    shapes = [f"{k} {tuple(source[k].shape)}→{tuple(target[k].shape)}" for k in target
              if k in source and k not in replaced_keys and source[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise LabError(
            "data.err_checkpoint_mismatch",
            name=name,
            missing=_shorten(missing) or "-",
            unexpected=_shorten(unexpected) or "-",
            shapes=_shorten(shapes) or "-",
        )
    return {k: v for k, v in source.items() if k not in replaced_keys}, replaced


def load_into_model(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    name: str = "checkpoint") -> LoadReport:
    """Copy a checkpoint into `model`: backbone strictly, head replaced when its size differs.

    Wrapper prefixes are stripped first. The head ("fc.*") is kept as the model initialised it
    when the checkpoint's head has another shape or is missing, and the report lists it. Any
    other missing key, unexpected key or shape mismatch raises "data.err_checkpoint_mismatch"
    naming the keys; the model is left untouched then.
    """
    source, stripped = strip_wrapper_prefixes(state_dict)
    to_load, replaced = _plan_load(model.state_dict(), source, name)
    result = model.load_state_dict(to_load, strict=False)
    replaced_keys = {h.key for h in replaced}
    leftover = [k for k in result.missing_keys if k not in replaced_keys and not k.endswith(OPTIONAL_SUFFIXES)]
    if leftover or result.unexpected_keys:  # _plan_load already raised for these; a guard against drift
        raise LabError("data.err_checkpoint_mismatch", name=name, missing=_shorten(leftover) or "-",
                       unexpected=_shorten(list(result.unexpected_keys)) or "-", shapes="-")
    logger.info("loaded %d tensors from %s; head replaced: %s; prefixes stripped: %s", len(to_load), name,
                [h.key for h in replaced], stripped)
    return LoadReport(len(to_load), replaced, stripped)


def check_fits(config: ResNetConfig, state_dict: Mapping[str, torch.Tensor], name: str = "checkpoint") -> LoadReport:
    """What `load_into_model` would report for a model of `config`, without building real weights.

    The model is built on the meta device, so a page can afford to call this on every change of
    architecture. It raises the same LabError as loading would.
    """
    source, stripped = strip_wrapper_prefixes(state_dict)
    with torch.device("meta"):
        target = build_resnet(config).state_dict()
    to_load, replaced = _plan_load(target, source, name)
    return LoadReport(len(to_load), replaced, stripped)


# --------------------------------------------------------------------------------------------
# Inferring the architecture of an uploaded checkpoint


def infer_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ResNetConfig:
    """The ResNetConfig whose parameters have exactly these names and shapes.

    Read from the tensors: stem type (7×7 conv1 -> ImageNet stem, 3×3 -> CIFAR stem), base width
    and input channels (conv1), stages and blocks per stage (layerN.i names), block type (conv3
    present -> Bottleneck), BatchNorm (bn1 present), shortcut (downsample.0 present ->
    projection), Fixup multipliers, classes (fc). The guess is then checked by building the
    model on the meta device and comparing every name and shape; LabError
    "data.err_not_resnet" when nothing fits.

    NOTE: a plain network and a residual one with zero-padding shortcuts have identical
    parameters, so such a checkpoint is read as residual; `skip_is_ambiguous` tells the caller.
    Input size is not stored in weights: 224 is assumed for the ImageNet stem, 32 for CIFAR.
    """
    sd, _ = strip_wrapper_prefixes(state_dict)
    conv1, fc = sd.get("conv1.weight"), sd.get("fc.weight")
    if conv1 is None or conv1.dim() != 4 or fc is None or fc.dim() != 2:
        raise LabError("data.err_not_resnet", reason="conv1.weight / fc.weight")

    stage_blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not indices:
            break
        if indices != set(range(len(indices))):
            raise LabError("data.err_not_resnet", reason=f"layer{stage}: blocks {sorted(indices)}")
        stage_blocks.append(len(indices))
    if not stage_blocks:
        raise LabError("data.err_not_resnet", reason="layer1")
    if any(re.match(r"layer[5-9]\.", k) for k in sd):
        raise LabError("data.err_not_resnet", reason="layer5+")

    kernel = conv1.shape[-1]
    if kernel not in (3, 7):
        raise LabError("data.err_not_resnet", reason=f"conv1 kernel {kernel}")
    stem = "imagenet" if kernel == 7 else "cifar"
    has_projection = any(".downsample.0.weight" in k for k in sd)
    config_fields = dict(
        stage_blocks=tuple(stage_blocks),
        block="bottleneck" if "layer1.0.conv3.weight" in sd else "basic",
        stem=stem,
        base_width=int(conv1.shape[0]),
        num_classes=int(fc.shape[0]),
        in_channels=int(conv1.shape[1]),
        input_size=224 if stem == "imagenet" else 32,
        skip=True,
        shortcut="projection" if has_projection else "zero_pad",
        batch_norm="bn1.weight" in sd,
        init="fixup" if any(k.endswith(".branch_scale") for k in sd) else "he",
    )
    try:
        config = ResNetConfig(**config_fields)
        with torch.device("meta"):
            expected = build_resnet(config).state_dict()
    except (LabError, ValueError, RuntimeError) as error:
        raise LabError("data.err_not_resnet", reason=str(error)[:200]) from error

    wrong = [k for k in expected if not k.endswith(OPTIONAL_SUFFIXES)
             and (k not in sd or tuple(sd[k].shape) != tuple(expected[k].shape))]
    extra = [k for k in sd if k not in expected]
    if wrong or extra:
        raise LabError("data.err_not_resnet", reason=_shorten(wrong + extra))
    return config


def skip_is_ambiguous(config: ResNetConfig) -> bool:
    """True when the weights alone cannot tell this network from its plain twin."""
    changes_size = len(config.stage_blocks) > 1 or config.block == "bottleneck"
    return config.shortcut == "zero_pad" or not changes_size


def canonical_imagenet_depth(config: ResNetConfig) -> int | None:
    """Return the ImageNet depth whose torchvision weights fit `config` (any head size), else None."""
    for depth, stages in IMAGENET_STAGES.items():
        reference = imagenet_config(depth)
        if config.replace(num_classes=reference.num_classes, input_size=reference.input_size,
                          init=reference.init) == reference:
            return depth
    return None


# --------------------------------------------------------------------------------------------
# Weights choices as stored with a run


WEIGHT_KINDS = ("none", "imagenet", "upload", "run")


def checkpoints_upload_dir() -> Path:
    from core.data import data_dir

    return data_dir() / "checkpoints"


def save_uploaded_checkpoint(source: Any, name: str) -> Path:
    """Keep an uploaded checkpoint where a worker process can read it; named by content hash.

    The bytes are checked with `read_checkpoint` first, so an unsafe file is never stored.
    """
    from core.images import read_bytes

    data = read_bytes(source)
    read_checkpoint(data, name)
    suffix = ".safetensors" if _is_safetensors(data) else ".pth"
    folder = checkpoints_upload_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(data).hexdigest()[:16] + suffix)
    if not path.is_file():
        temporary = path.with_suffix(path.suffix + ".partial")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return path


def load_weights_spec(spec: Mapping[str, Any] | None, model: nn.Module, allow_download: bool = False,
                      progress: ProgressCallback | None = None) -> LoadReport | None:
    """Apply a weights choice to `model`; returns None for "none".

    Spec forms (a plain dict, stored with the run):
    {"kind": "none"}, {"kind": "imagenet", "weights": "ResNet50_Weights.IMAGENET1K_V2"},
    {"kind": "upload", "path": ".../checkpoints/<hash>.pth", "name": "mine.pth"},
    {"kind": "run", "run_id": "...", "path": ".../runs/<id>/model.safetensors"}.
    """
    kind = (spec or {}).get("kind", "none")
    if kind == "none":
        return None
    if kind == "imagenet":
        name = spec["weights"]
        return load_into_model(model, load_imagenet_state_dict(name, allow_download, progress), name)
    if kind in ("upload", "run"):
        path = Path(spec["path"])
        label = str(spec.get("name") or spec.get("run_id") or path.name)
        if not path.is_file():
            raise LabError("data.err_checkpoint_missing", name=label, path=str(path))
        return load_into_model(model, read_checkpoint(path.read_bytes(), label), label)
    raise LabError("data.err_weights_kind", value=kind, allowed=", ".join(WEIGHT_KINDS))
