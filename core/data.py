"""Datasets, their train/validation split, and the preprocessing stored with every run.

Sources (`DatasetSpec.source`):
- "digits": scikit-learn's handwritten digits, 1,797 real 8×8 scans, 10 classes. No network.
- "faces": scikit-image's LFW subset, 100 faces and 100 non-faces, 25×25 grayscale. No network.
- "textures": 64×64 tiles of scikit-image's brick, grass and gravel photos (64 per class).
- "cifar10": CIFAR-10 through torchvision, cached under `data_dir()/cifar10`. It is downloaded
  only when the spec allows it. Offline, the error names the file and the folder.
- "folder": an ImageFolder layout on the server (class folders, optionally under train/ and
  val/).
- "zip": an uploaded zip of class folders, extracted safely by `extract_zip` (the spec keeps
  the extracted folder).

Class order: the embedded sets and CIFAR-10 keep their published order. Folder and zip classes
are sorted naturally ("2" before "10", case-insensitive), unlike torchvision's ImageFolder,
which sorts "10" before "2". Whatever the source, the run stores `LoadedDataset.classes`,
and that list (index = position) is the mapping every page uses.

Images from files go through `core.images.decode_image`, the decoder the TTA page uses too, and
`Preprocessing` turns a decoded image into the model input identically for training and TTA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from core.errors import LabError
from core.images import decode_image, read_bytes

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "RESNET_LAB_DATA_DIR"
# Optional list of folders (os.pathsep-separated) that "folder" datasets must lie inside. Unset,
# any folder the server process can read is allowed, which suits a lab run on one's own machine.
DATASET_ROOTS_ENV = "RESNET_LAB_DATASET_ROOTS"
SOURCES = ("digits", "faces", "textures", "cifar10", "folder", "zip")
EMBEDDED_SOURCES = ("digits", "faces", "textures")

# Folder names (case-insensitive) that mark a ready-made split inside a dataset folder.
TRAIN_FOLDER_NAMES = ("train", "training")
VAL_FOLDER_NAMES = ("val", "valid", "validation", "test")

# Operating-system litter that is never a class or an image.
METADATA_NAMES = ("__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "system volume information")

MAX_DATASET_FILES = 50_000  # files listed in one folder dataset, images or not
MAX_CLASSES = 1_000

RESIZE_POLICIES = ("stretch", "resize_crop", "letterbox")
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC}
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics (weights' meta)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

TEXTURE_TILE = 64  # side of one tile cut from the 512×512 texture photos

# skimage.data files shown as sample photos (TTA page); names are the files in skimage/data.
SAMPLE_PHOTO_FILES = {
    "chelsea": "chelsea.png",  # a tabby cat
    "coffee": "coffee.png",  # a cup of coffee
    "astronaut": "astronaut.png",  # Eileen Collins
    "rocket": "rocket.jpg",  # a rocket on the launch pad
    "motorcycle": "motorcycle_left.png",
    "camera": "camera.png",  # a photographer with a camera (grayscale)
}


def data_dir() -> Path:
    """Folder for downloaded and extracted data: $RESNET_LAB_DATA_DIR or ~/.cache/resnet-lab."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "resnet-lab"


# --------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """Decoded RGB image -> model input tensor. Saved with every run; training and TTA share it.

    Steps, in order: resize to `input_size`×`input_size` by `resize`, convert to `channels`
    (3: RGB, grayscale stays replicated; 1: ITU-R 601 luma), scale to [0, 1], subtract `mean`
    and divide by `std` per channel.
    """

    input_size: int = 32  # side of the square model input, in pixels
    resize: str = "stretch"  # "stretch" (ignore aspect), "resize_crop" (shorter side, centre crop), "letterbox"
    resize_size: int | None = None  # "resize_crop": shorter side before the crop (ImageNet: 256); None = input_size
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        self.validate()

    def validate(self) -> None:
        if not 8 <= self.input_size <= 2048:
            raise LabError("data.err_prep_input_size", value=self.input_size, low=8, high=2048)
        if self.resize not in RESIZE_POLICIES:
            raise LabError("data.err_prep_choice", field="resize", value=self.resize,
                           allowed=", ".join(RESIZE_POLICIES))
        if self.interpolation not in INTERPOLATIONS:
            raise LabError("data.err_prep_choice", field="interpolation", value=self.interpolation,
                           allowed=", ".join(INTERPOLATIONS))
        if self.channels not in (1, 3):
            raise LabError("data.err_prep_choice", field="channels", value=self.channels, allowed="1, 3")
        if self.resize_size is not None and self.resize_size < self.input_size:
            raise LabError("data.err_prep_resize_size", value=self.resize_size, input_size=self.input_size)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise LabError("data.err_prep_stats", channels=self.channels, mean=len(self.mean), std=len(self.std))
        if any(not s > 0 for s in self.std):
            raise LabError("data.err_prep_std", value=", ".join(f"{s:g}" for s in self.std))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabError("data.err_prep_unknown_fields", fields=", ".join(unknown))
        return cls(**data)

    def replace(self, **changes: Any) -> Preprocessing:
        return dataclasses.replace(self, **changes)

    def resize_image(self, image: Image.Image) -> Image.Image:
        """Resize to the exact model input, input_size × input_size, in mode RGB (or L for 1 channel)."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        side, resample = self.input_size, INTERPOLATIONS[self.interpolation]
        width, height = image.size

        if self.resize == "stretch":
            image = image.resize((side, side), resample)
        elif self.resize == "resize_crop":
            shorter = self.resize_size or side
            scale = shorter / min(width, height)
            new_size = (max(side, round(width * scale)), max(side, round(height * scale)))
            image = image.resize(new_size, resample)
            left, top = (new_size[0] - side) // 2, (new_size[1] - side) // 2
            image = image.crop((left, top, left + side, top + side))
        else:  # letterbox: fit the longer side, pad with the mean colour (0 after normalising)
            scale = side / max(width, height)
            new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
            fill = tuple(round(m * 255) for m in (self.mean if self.channels == 3 else self.mean * 3))
            canvas = Image.new("RGB", (side, side), fill)
            canvas.paste(image.resize(new_size, resample), ((side - new_size[0]) // 2, (side - new_size[1]) // 2))
            image = canvas

        return image.convert("L") if self.channels == 1 else image

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """Resized image as floats in [0, 1], shape (C, H, W), before normalisation."""
        pixels = np.asarray(self.resize_image(image), dtype=np.float32) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std on (C, H, W) or (B, C, H, W) tensors in [0, 1]."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`, clamped to [0, 1] for display."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * std + mean).clamp(0.0, 1.0)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Model input for one decoded image, shape (C, input_size, input_size)."""
        return self.normalize(self.to_tensor(image))


DEFAULT_INPUT_SIZE = {"digits": 32, "faces": 32, "textures": 64, "cifar10": 32, "folder": 64, "zip": 64}


def default_preprocessing(source: str, pretrained: bool = False) -> Preprocessing:
    """Return a starting point per source; `pretrained` switches to ImageNet statistics.

    Without pretrained weights the mean/std stay at 0.5 until `fit_normalization` replaces
    them with the training split's own statistics.
    """
    size = DEFAULT_INPUT_SIZE.get(source, 64)
    if pretrained:
        return Preprocessing(input_size=size, resize="stretch", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return Preprocessing(input_size=size, resize="stretch")


def imagenet_preprocessing(crop_size: int = 224, resize_size: int = 256,
                           interpolation: str = "bilinear") -> Preprocessing:
    """torchvision's ImageNet evaluation recipe: shorter side to `resize_size`, centre crop."""
    return Preprocessing(input_size=crop_size, resize="resize_crop", resize_size=resize_size,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation=interpolation)


# --------------------------------------------------------------------------------------------
# Specs, splits, loaded datasets


@dataclass(frozen=True)
class DatasetSpec:
    """Description of the data to load; its dict is stored with the run and reloads the same data."""

    source: str = "digits"
    path: str | None = None  # "folder": the dataset folder; "zip": the extracted folder
    upload_name: str | None = None  # "zip": the uploaded file's name, for display
    val_fraction: float = 0.2  # share of each class held out when the data has no split
    seed: int = 0  # seeds the stratified split and the per-class caps
    classes: tuple[str, ...] | None = None  # keep only these classes; index = position in this tuple
    max_per_class: int | None = None  # cap per class and split, for quick runs
    allow_download: bool = False  # "cifar10": may download the archive when it is not cached

    def __post_init__(self) -> None:
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        self.validate()

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise LabError("data.err_spec_source", value=self.source, allowed=", ".join(SOURCES))
        if not 0.0 < self.val_fraction < 1.0:
            raise LabError("data.err_spec_val_fraction", value=self.val_fraction)
        if self.source in ("folder", "zip") and not self.path:
            raise LabError("data.err_spec_path", source=self.source)
        if self.max_per_class is not None and self.max_per_class < 1:
            raise LabError("data.err_spec_max_per_class", value=self.max_per_class)
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise LabError("data.err_spec_duplicate_classes", classes=", ".join(self.classes))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["classes"] = list(self.classes) if self.classes is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabError("data.err_spec_unknown_fields", fields=", ".join(unknown))
        return cls(**data)

    def replace(self, **changes: Any) -> DatasetSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a dataset: `reason` is a catalog key, `params` fill it."""

    path: str  # relative to the dataset folder (or the zip), with "/" separators
    reason: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "params": dict(self.params)}


@dataclass
class Split:
    """One split: labels plus either in-memory pixels or image files."""

    labels: np.ndarray  # (N,) int64 class indices
    arrays: np.ndarray | None = None  # (N, H, W, 3) uint8, for embedded sets and CIFAR-10
    paths: list[Path] | None = None  # image files, decoded with core.images.decode_image
    root: Path | None = None  # paths are shown relative to it

    def __len__(self) -> int:
        return int(len(self.labels))

    def load(self, index: int) -> Image.Image:
        """Return the RGB image of sample `index` (files are decoded by core.images.decode_image)."""
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index], mode="RGB")
        path = self.paths[index]
        return decode_image(path.read_bytes(), self.display_name(index)).image

    def display_name(self, index: int) -> str:
        if self.paths is None:
            return f"#{index}"
        path = self.paths[index]
        return path.relative_to(self.root).as_posix() if self.root is not None else path.name

    def counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).astype(int).tolist()

    def subset(self, indices: np.ndarray) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        return Split(
            labels=self.labels[indices],
            arrays=self.arrays[indices] if self.arrays is not None else None,
            paths=[self.paths[i] for i in indices] if self.paths is not None else None,
            root=self.root,
        )


@dataclass
class LoadedDataset:
    """A dataset ready for training: classes (index = position), splits, and what was skipped."""

    spec: DatasetSpec
    classes: list[str]
    train: Split
    val: Split
    split_kind: str  # "stratified" (made here, seeded), "folders" (train/ and val/), "official" (CIFAR-10 test set)
    skipped: list[SkippedFile] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)  # class folders without one usable image

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.classes)}

    def counts(self) -> dict[str, list[int]]:
        return {"train": self.train.counts(len(self.classes)), "val": self.val.counts(len(self.classes))}

    def summary(self, max_skipped: int = 200) -> dict:
        """JSON-ready description stored with the run (the class mapping is what counts)."""
        return {
            "spec": self.spec.to_dict(),
            "classes": list(self.classes),
            "class_to_idx": self.class_to_idx,
            "split_kind": self.split_kind,
            "counts": self.counts(),
            "empty_classes": list(self.empty_classes),
            "skipped_total": len(self.skipped),
            "skipped": [s.to_dict() for s in self.skipped[:max_skipped]],
        }


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so every class keeps its share; the same (labels, fraction, seed) give the same split.

    Each class with n ≥ 2 samples sends round(n·val_fraction) of them to validation, at least 1
    and at most n − 1. A class with a single sample stays in training. Returns sorted
    (train_indices, val_indices).
    """
    if not 0.0 < val_fraction < 1.0:
        raise LabError("data.err_spec_val_fraction", value=val_fraction)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        n_val = 0
        if len(members) >= 2:
            n_val = min(max(math.floor(len(members) * val_fraction + 0.5), 1), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.zeros(0, dtype=np.int64)
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    return train.astype(np.int64), val.astype(np.int64)


def cap_per_class(labels: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices keeping at most `max_per_class` samples of each class, chosen by `seed`."""
    labels = np.asarray(labels)
    if max_per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        kept.append(members[rng.permutation(len(members))[:max_per_class]])
    return np.sort(np.concatenate(kept)).astype(np.int64) if kept else np.zeros(0, dtype=np.int64)


def natural_sort_key(name: str) -> tuple:
    """Key that orders "2" before "10" and ignores case; ties fall back to the exact name."""
    parts = re.split(r"(\d+)", name.casefold())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p), name


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(spec: DatasetSpec | dict) -> LoadedDataset:
    """Load the data a spec describes (see the module docstring for the sources).

    Raises LabError when the data is missing, offline, unsafe or unusable (fewer than two
    classes with images).
    """
    if isinstance(spec, dict):
        spec = DatasetSpec.from_dict(spec)
    logger.info("loading dataset %s", spec.to_dict())

    if spec.source in EMBEDDED_SOURCES:
        classes, images, labels = _EMBEDDED_LOADERS[spec.source]()
        loaded = _from_pool(spec, classes, Split(labels=labels, arrays=images))
    elif spec.source == "cifar10":
        loaded = _load_cifar10(spec)
    else:
        loaded = _load_folder(spec)

    _check_usable(loaded)
    logger.info("dataset %s: %d classes, %d train, %d val, %d skipped", spec.source, len(loaded.classes),
                len(loaded.train), len(loaded.val), len(loaded.skipped))
    return loaded


def _check_usable(loaded: LoadedDataset) -> None:
    if len(loaded.classes) < 2:
        raise LabError("data.err_too_few_classes", found=len(loaded.classes),
                       classes=", ".join(loaded.classes) or "-")
    empty_in_train = [name for name, n in zip(loaded.classes, loaded.counts()["train"]) if n == 0]
    if empty_in_train:
        raise LabError("data.err_class_without_training", classes=", ".join(empty_in_train))


def _select_classes(spec: DatasetSpec, classes: list[str], split: Split) -> tuple[list[str], Split]:
    """Keep the spec's classes (in the spec's order) and renumber labels to match."""
    if spec.classes is None:
        return classes, split
    unknown = [c for c in spec.classes if c not in classes]
    if unknown:
        raise LabError("data.err_unknown_classes", classes=", ".join(unknown), available=", ".join(classes))
    old_to_new = np.full(len(classes), -1, dtype=np.int64)
    for new_index, name in enumerate(spec.classes):
        old_to_new[classes.index(name)] = new_index
    keep = np.flatnonzero(old_to_new[split.labels] >= 0)
    kept = split.subset(keep)
    kept.labels = old_to_new[kept.labels]
    return list(spec.classes), kept


def _from_pool(spec: DatasetSpec, classes: list[str], pool: Split,
               skipped: list[SkippedFile] | None = None, empty: list[str] | None = None) -> LoadedDataset:
    """Build a dataset from one unsplit pool: select classes, cap, stratified seeded split."""
    classes, pool = _select_classes(spec, classes, pool)
    pool = pool.subset(cap_per_class(pool.labels, spec.max_per_class, spec.seed))
    train_idx, val_idx = stratified_split(pool.labels, spec.val_fraction, spec.seed)
    return LoadedDataset(spec, classes, pool.subset(train_idx), pool.subset(val_idx), "stratified",
                         skipped or [], empty or [])


def _gray_to_rgb_uint8(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)


def load_digits_arrays() -> tuple[list[str], np.ndarray, np.ndarray]:
    """scikit-learn digits as uint8 RGB (1797, 8, 8, 3); ink is bright (16 -> 255) as in the data."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.floor(digits.images * (255.0 / 16.0) + 0.5)
    return [str(d) for d in range(10)], _gray_to_rgb_uint8(gray), digits.target.astype(np.int64)


def load_faces_arrays() -> tuple[list[str], np.ndarray, np.ndarray]:
    """scikit-image's LFW subset: the first 100 of 200 25×25 crops are faces, the rest are not."""
    from skimage.data import lfw_subset

    gray = np.floor(np.clip(lfw_subset(), 0.0, 1.0) * 255.0 + 0.5)
    labels = np.array([0] * 100 + [1] * 100, dtype=np.int64)
    return ["face", "no_face"], _gray_to_rgb_uint8(gray), labels


def load_textures_arrays() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Non-overlapping 64×64 tiles of scikit-image's 512×512 brick, grass and gravel photos."""
    from skimage import data as skdata

    classes = ["brick", "grass", "gravel"]
    tiles, labels = [], []
    for label, name in enumerate(classes):
        photo = getattr(skdata, name)()  # (512, 512) uint8
        rows, cols = photo.shape[0] // TEXTURE_TILE, photo.shape[1] // TEXTURE_TILE
        for r in range(rows):
            for c in range(cols):
                tiles.append(photo[r * TEXTURE_TILE:(r + 1) * TEXTURE_TILE, c * TEXTURE_TILE:(c + 1) * TEXTURE_TILE])
                labels.append(label)
    return classes, _gray_to_rgb_uint8(np.stack(tiles)), np.array(labels, dtype=np.int64)


_EMBEDDED_LOADERS = {"digits": load_digits_arrays, "faces": load_faces_arrays, "textures": load_textures_arrays}


def cifar10_root() -> Path:
    """Folder passed to torchvision as `root`; the batches live in root/cifar-10-batches-py."""
    return data_dir() / "cifar10"


def _load_cifar10(spec: DatasetSpec) -> LoadedDataset:
    """CIFAR-10's 50,000 training images and its 10,000 test images as the validation split."""
    from torchvision.datasets import CIFAR10

    root = cifar10_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        train = CIFAR10(str(root), train=True, download=spec.allow_download)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as error:
        # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        logger.info("CIFAR-10 not available in %s: %s", root, error)
        raise LabError("data.err_cifar_missing", file=CIFAR10_ARCHIVE, folder=str(root), url=CIFAR10_URL) from error
    except OSError as error:  # urllib.error.URLError is an OSError: no network, DNS, refused
        logger.info("CIFAR-10 download failed: %s", error)
        raise LabError("data.err_cifar_offline", file=CIFAR10_ARCHIVE, folder=str(root), url=CIFAR10_URL) from error

    classes = list(train.classes)
    train_split = Split(labels=np.asarray(train.targets, dtype=np.int64), arrays=np.asarray(train.data))
    val_split = Split(labels=np.asarray(test.targets, dtype=np.int64), arrays=np.asarray(test.data))
    train_classes, train_split = _select_classes(spec, classes, train_split)
    _, val_split = _select_classes(spec, classes, val_split)
    train_split = train_split.subset(cap_per_class(train_split.labels, spec.max_per_class, spec.seed))
    val_split = val_split.subset(cap_per_class(val_split.labels, spec.max_per_class, spec.seed))
    return LoadedDataset(spec, train_classes, train_split, val_split, "official")


# --------------------------------------------------------------------------------------------
# Folder datasets (server folder or extracted zip)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_metadata(name: str) -> bool:
    return name.startswith("._") or name.casefold() in METADATA_NAMES


def _litter_reason(name: str) -> str | None:
    if _is_metadata(name):
        return "data.skip_metadata"
    if _is_hidden(name):
        return "data.skip_hidden"
    return None


@dataclass
class FolderScan:
    """Result of `scan_image_folder`: image files per class, per split folder."""

    root: Path  # the folder that contains the class folders (or train/ and val/)
    classes: list[str]  # class folders with at least one image, in natural order
    files: dict[str, dict[str, list[Path]]]  # split ("train", maybe "val") -> class -> images
    empty_classes: list[str]
    skipped: list[SkippedFile]
    has_val_folder: bool


def _visible_entries(folder: Path, root: Path, skipped: list[SkippedFile]) -> tuple[list[Path], list[Path]]:
    """(subfolders, files) of `folder`, skipping and listing litter, links and special files."""
    folders, files = [], []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: natural_sort_key(p.name))
    except OSError as error:  # e.g. no permission to list it
        relative = folder.relative_to(root).as_posix() if folder != root else "."
        skipped.append(SkippedFile(relative, "data.skip_unreadable", {"detail": error.strerror or str(error)}))
        return [], []
    for entry in entries:
        relative = entry.relative_to(root).as_posix()
        reason = _litter_reason(entry.name)
        if reason:
            skipped.append(SkippedFile(relative, reason))
        elif entry.is_symlink():
            skipped.append(SkippedFile(relative, "data.skip_link"))
        elif entry.is_dir():
            folders.append(entry)
        elif entry.is_file():
            files.append(entry)
        else:
            skipped.append(SkippedFile(relative, "data.skip_special"))
    return folders, files


def _find_layout_root(root: Path) -> Path:
    """Descend through wrapper folders ("mydata/" inside the zip) to the folder with the classes."""
    current = root
    for _ in range(3):
        folders, files = _visible_entries(current, root, [])
        names = {f.name.casefold() for f in folders}
        if names & set(TRAIN_FOLDER_NAMES):
            return current
        if len(folders) == 1 and not files:
            inner_folders, _ = _visible_entries(folders[0], root, [])
            if inner_folders:
                current = folders[0]
                continue
        return current
    return current


def _collect_images(class_folder: Path, root: Path, skipped: list[SkippedFile], verify: bool,
                    budget: list[int]) -> list[Path]:
    """Image files anywhere under `class_folder` (links not followed), decodable when `verify`."""
    images: list[Path] = []
    pending = [class_folder]
    while pending:
        folder = pending.pop(0)
        folders, files = _visible_entries(folder, root, skipped)
        pending.extend(folders)
        for path in files:
            budget[0] -= 1
            if budget[0] < 0:
                raise LabError("data.err_too_many_files", limit=MAX_DATASET_FILES, folder=str(root))
            relative = path.relative_to(root).as_posix()
            if verify:
                try:
                    decode_image(path.read_bytes(), relative)
                except LabError as error:
                    reason = "data.skip_not_image" if error.key == "data.err_image_unknown" else error.key
                    skipped.append(SkippedFile(relative, reason, dict(error.params)))
                    continue
                except OSError as error:
                    skipped.append(SkippedFile(relative, "data.skip_unreadable", {"detail": str(error)[:200]}))
                    continue
            images.append(path)
    return images


def scan_image_folder(root: str | Path, verify: bool = True) -> FolderScan:
    """List an ImageFolder layout: class folders, or train/ and val/ each holding class folders.

    Hidden entries, macOS metadata (__MACOSX/, ._*), links, files outside class folders,
    non-images and (with `verify`) images that fail to decode are skipped and listed. Class
    folders left without an image are named in `empty_classes` and get no index.
    """
    root = Path(root)
    if not root.is_dir():
        raise LabError("data.err_folder_missing", folder=str(root))
    if root.is_symlink():
        raise LabError("data.err_folder_link", folder=str(root))

    skipped: list[SkippedFile] = []
    layout_root = _find_layout_root(root)
    folders, files = _visible_entries(layout_root, root, skipped)
    for path in files:
        skipped.append(SkippedFile(path.relative_to(root).as_posix(), "data.skip_outside_class"))

    by_name = {f.name.casefold(): f for f in folders}
    train_folder = next((by_name[n] for n in TRAIN_FOLDER_NAMES if n in by_name), None)
    val_folder = next((by_name[n] for n in VAL_FOLDER_NAMES if n in by_name), None) if train_folder else None
    split_folders = {"train": train_folder, "val": val_folder} if train_folder else {"train": layout_root}
    if train_folder:
        for other in folders:
            if other not in (train_folder, val_folder):
                skipped.append(SkippedFile(other.relative_to(root).as_posix(), "data.skip_outside_class"))

    budget = [MAX_DATASET_FILES]
    found: dict[str, dict[str, list[Path]]] = {}
    for split, folder in split_folders.items():
        if folder is None:
            continue
        class_folders, loose_files = _visible_entries(folder, root, skipped if folder != layout_root else [])
        if folder != layout_root:
            for path in loose_files:
                skipped.append(SkippedFile(path.relative_to(root).as_posix(), "data.skip_outside_class"))
        if len(class_folders) > MAX_CLASSES:
            raise LabError("data.err_too_many_classes", found=len(class_folders), limit=MAX_CLASSES)
        found[split] = {c.name: _collect_images(c, root, skipped, verify, budget) for c in class_folders}

    train_found = found["train"]
    names = sorted(train_found, key=natural_sort_key)
    classes = [n for n in names if train_found[n]]
    empty = [n for n in names if not train_found[n]]
    if "val" in found:
        for name, paths in found["val"].items():
            if name not in train_found:
                for path in paths:
                    skipped.append(SkippedFile(path.relative_to(root).as_posix(), "data.skip_unknown_class",
                                               {"class_name": name}))
    return FolderScan(layout_root, classes, found, empty, skipped, "val" in found)


def _split_from_files(files: dict[str, list[Path]], classes: list[str], root: Path) -> Split:
    paths, labels = [], []
    for index, name in enumerate(classes):
        for path in files.get(name, []):
            paths.append(path)
            labels.append(index)
    return Split(labels=np.array(labels, dtype=np.int64), paths=paths, root=root)


def check_folder_allowed(folder: str | Path) -> Path:
    """Resolve `folder`, raising LabError when $RESNET_LAB_DATASET_ROOTS is set and excludes it."""
    resolved = Path(folder).expanduser().resolve()
    configured = os.environ.get(DATASET_ROOTS_ENV, "")
    roots = [Path(r).expanduser().resolve() for r in configured.split(os.pathsep) if r.strip()]
    if roots and not any(resolved.is_relative_to(r) for r in roots):
        raise LabError("data.err_folder_not_allowed", folder=str(resolved),
                       roots=", ".join(str(r) for r in roots))
    return resolved


def _load_folder(spec: DatasetSpec) -> LoadedDataset:
    root = Path(spec.path)
    if spec.source == "folder":
        check_folder_allowed(root)
    skipped: list[SkippedFile] = []
    if spec.source == "zip":
        skipped.extend(read_extraction_skipped(root))
    scan = scan_image_folder(root)
    skipped.extend(scan.skipped)

    train = _split_from_files(scan.files["train"], scan.classes, root)
    if not scan.has_val_folder:
        return _from_pool(spec, scan.classes, train, skipped, scan.empty_classes)

    val = _split_from_files(scan.files["val"], scan.classes, root)
    classes, train = _select_classes(spec, scan.classes, train)
    _, val = _select_classes(spec, scan.classes, val)
    train = train.subset(cap_per_class(train.labels, spec.max_per_class, spec.seed))
    val = val.subset(cap_per_class(val.labels, spec.max_per_class, spec.seed))
    return LoadedDataset(spec, classes, train, val, "folders", skipped, scan.empty_classes)


# --------------------------------------------------------------------------------------------
# Safe zip extraction


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on one archive, checked on the declared sizes before writing and on the bytes written."""

    max_members: int = 50_000  # entries in the central directory, folders included
    max_total_bytes: int = 1 << 30  # 1 GiB uncompressed in all
    max_member_bytes: int = 256 << 20  # 256 MiB for a single file


@dataclass(frozen=True)
class ExtractedZip:
    """An extracted upload: images live under `root`; `skipped` lists the entries not written."""

    root: Path
    sha256: str
    files: int
    total_bytes: int
    skipped: list[SkippedFile]


EXTRACTED_FOLDER = "extracted"  # published extraction: <base>/extracted/{files/, extraction.json}
FILES_FOLDER = "files"  # the dataset root handed to scan_image_folder
MANIFEST_NAME = "extraction.json"  # next to files/, so the scan never sees it
COPY_CHUNK_BYTES = 1 << 20


def uploads_dir() -> Path:
    return data_dir() / "uploads"


def _safe_member_path(name: str) -> PurePosixPath | None:
    """Return the relative path for a zip entry, or None when the name is absolute or climbs out."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        return None
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return PurePosixPath(*parts)


def _member_kind(info: zipfile.ZipInfo) -> str:
    """'dir', 'file', 'link' or 'special', from the Unix mode the archiver stored (if any)."""
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored no type (Windows, writestr)
    if file_type == stat.S_IFLNK:
        return "link"
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "dir"
    if file_type not in (0, stat.S_IFREG):
        return "special"
    return "file"


def _plan_extraction(archive: zipfile.ZipFile, limits: ZipLimits) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], list[SkippedFile]]:
    """Decide what to write, refusing the archive when its declared sizes break the limits."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise LabError("data.err_zip_too_many_files", found=len(members), limit=limits.max_members)
    declared = sum(m.file_size for m in members)
    if declared > limits.max_total_bytes:
        raise LabError("data.err_zip_too_large", size_mib=_mib(declared), limit_mib=_mib(limits.max_total_bytes))

    plan, skipped = [], []
    for info in members:
        target = _safe_member_path(info.filename)
        kind = _member_kind(info)
        if target is None:
            skipped.append(SkippedFile(info.filename, "data.skip_unsafe_path"))
            continue
        litter = next((_litter_reason(part) for part in target.parts if _litter_reason(part)), None)
        if litter:
            if kind != "dir":
                skipped.append(SkippedFile(target.as_posix(), litter))
            continue
        if kind == "dir":
            plan.append((info, target))  # kept so that an empty class folder is seen and named
        elif kind == "link":
            skipped.append(SkippedFile(target.as_posix(), "data.skip_link"))
        elif kind == "special":
            skipped.append(SkippedFile(target.as_posix(), "data.skip_special"))
        elif info.flag_bits & 0x1:
            skipped.append(SkippedFile(target.as_posix(), "data.skip_encrypted"))
        elif info.file_size > limits.max_member_bytes:
            raise LabError("data.err_zip_member_too_large", name=target.as_posix(), size_mib=_mib(info.file_size),
                           limit_mib=_mib(limits.max_member_bytes))
        else:
            plan.append((info, target))
    return plan, skipped


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, limits: ZipLimits,
                 written_total: int) -> int:
    """Stream one entry to disk, counting real bytes; returns the bytes written.

    CPython's zipfile (3.11) already stops an entry at its declared size and then fails the
    CRC check, so a lying header ends in BadZipFile. The counts here keep the limits even if
    a zipfile version did not.
    """
    written = 0
    with archive.open(info) as source, open(destination, "xb") as sink:
        while chunk := source.read(COPY_CHUNK_BYTES):
            written += len(chunk)
            if written > info.file_size or written > limits.max_member_bytes:
                raise LabError("data.err_zip_size_mismatch", name=info.filename)
            if written_total + written > limits.max_total_bytes:
                raise LabError("data.err_zip_too_large", size_mib=_mib(written_total + written),
                               limit_mib=_mib(limits.max_total_bytes))
            sink.write(chunk)
    return written


def extract_zip(source: Any, name: str = "upload.zip", limits: ZipLimits = ZipLimits(),
                destination: Path | None = None) -> ExtractedZip:
    """Extract an uploaded zip of class folders into its own folder, safely.

    - Nothing is written outside the folder: absolute names, drive letters and ".." entries are
      skipped and listed, and every target is checked to resolve inside the folder.
    - Links, special files, encrypted entries, hidden files and macOS metadata are not written.
    - The archive is rejected (LabError, nothing left behind) when its declared entry count or
      sizes exceed `limits`, or when the bytes actually decompressed exceed the declared size or
      the limits (a zip bomb with a lying header).
    The files end up in <base>/extracted/files, where <base> is `destination` or
    uploads_dir()/<sha256 prefix>. The extraction is staged and published with one rename, so
    concurrent sessions uploading the same zip never see half of it, and a finished extraction
    of identical bytes is reused.
    """
    content = read_bytes(source)
    digest = hashlib.sha256(content).hexdigest()
    base = Path(destination) if destination is not None else uploads_dir() / digest[:16]
    published = base / EXTRACTED_FOLDER
    reused = _reuse_extraction(published, digest)
    if reused is not None:
        return reused

    try:
        archive = zipfile.ZipFile(_BytesReader(content))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise LabError("data.err_zip_invalid", name=name) from error

    with archive:
        plan, skipped = _plan_extraction(archive, limits)
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="extracting-", dir=base))
        try:
            (staging / FILES_FOLDER).mkdir()
            files, total = _write_plan(archive, plan, staging / FILES_FOLDER, limits)
        except LabError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as error:
            # BadZipFile covers "Bad CRC-32"; RuntimeError covers encrypted entries; NotImplementedError
            # an unsupported compression method.
            shutil.rmtree(staging, ignore_errors=True)
            logger.info("zip %s rejected while extracting: %s", name, error)
            raise LabError("data.err_zip_invalid", name=name) from error

    manifest = {"sha256": digest, "name": name, "files": files, "total_bytes": total,
                "skipped": [s.to_dict() for s in skipped]}
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    try:
        os.rename(staging, published)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        reused = _reuse_extraction(published, digest)  # another session published the same zip first
        if reused is None:
            raise
        return reused
    logger.info("extracted %s (%d files, %d bytes, %d skipped) to %s", name, files, total, len(skipped), published)
    return ExtractedZip(published / FILES_FOLDER, digest, files, total, skipped)


def _reuse_extraction(published: Path, digest: str) -> ExtractedZip | None:
    manifest_path = published / MANIFEST_NAME
    if not manifest_path.is_file() or not (published / FILES_FOLDER).is_dir():
        return None
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("sha256") != digest:
        return None
    return _extracted_from_manifest(published / FILES_FOLDER, manifest)


class _BytesReader:
    """Minimal seekable reader over bytes (io.BytesIO would copy large uploads)."""

    def __init__(self, content: bytes) -> None:
        self._view = memoryview(content)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        chunk = bytes(self._view[self._position:end])
        self._position = end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True


def _write_plan(archive: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, PurePosixPath]], staging: Path,
                limits: ZipLimits) -> tuple[int, int]:
    staging_resolved = staging.resolve()
    total, files = 0, 0
    for info, target in plan:
        destination = staging.joinpath(*target.parts)
        # Defence in depth: the name checks above already exclude this.
        if not destination.resolve().is_relative_to(staging_resolved):
            raise LabError("data.err_zip_invalid", name=info.filename)
        if _member_kind(info) == "dir":
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            continue  # a duplicate entry name: the first one wins
        total += _copy_member(archive, info, destination, limits, total)
        files += 1
    return files, total


def _extracted_from_manifest(root: Path, manifest: dict) -> ExtractedZip:
    skipped = [SkippedFile(s["path"], s["reason"], s.get("params", {})) for s in manifest.get("skipped", [])]
    return ExtractedZip(root, manifest["sha256"], int(manifest["files"]), int(manifest["total_bytes"]), skipped)


def read_extraction_skipped(root: Path) -> list[SkippedFile]:
    """Entries the extraction of the zip behind `root` skipped (empty when there is no manifest)."""
    manifest_path = Path(root).parent / MANIFEST_NAME
    if not manifest_path.is_file():
        return []
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return [SkippedFile(s["path"], s["reason"], s.get("params", {})) for s in manifest.get("skipped", [])]


# --------------------------------------------------------------------------------------------
# Torch datasets and statistics


class ImageDataset(Dataset):
    """(model input, label) pairs of one split, preprocessed on the fly."""

    def __init__(self, split: Split, preprocessing: Preprocessing) -> None:
        self.split = split
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.preprocessing(self.split.load(index)), int(self.split.labels[index])


def preload_bytes(split: Split, preprocessing: Preprocessing) -> int:
    """Memory a `tensor_dataset` of this split would take, in bytes (float32)."""
    side = preprocessing.input_size
    return len(split) * preprocessing.channels * side * side * 4


def tensor_dataset(split: Split, preprocessing: Preprocessing) -> TensorDataset:
    """Preprocess the whole split once into memory: inputs (N, C, H, W) float32, labels (N,) int64."""
    if len(split) == 0:
        side = preprocessing.input_size
        return TensorDataset(torch.zeros(0, preprocessing.channels, side, side), torch.zeros(0, dtype=torch.int64))
    inputs = torch.stack([preprocessing(split.load(i)) for i in range(len(split))])
    return TensorDataset(inputs, torch.as_tensor(split.labels, dtype=torch.int64))


def fit_normalization(split: Split, preprocessing: Preprocessing, max_images: int = 2000,
                      seed: int = 0) -> Preprocessing:
    """Return `preprocessing` with mean/std per channel measured on (up to `max_images` of) `split`.

    Fit it on the training split only, so validation numbers do not see validation statistics.
    """
    if len(split) == 0:
        return preprocessing
    indices = np.arange(len(split))
    if len(split) > max_images:
        indices = np.sort(np.random.default_rng(seed).choice(len(split), size=max_images, replace=False))
    batch = torch.stack([preprocessing.to_tensor(split.load(int(i))) for i in indices]).double()  # (N, C, H, W)
    mean = batch.mean(dim=(0, 2, 3))
    std = batch.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3)
    return preprocessing.replace(mean=tuple(round(float(v), 6) for v in mean), std=tuple(round(float(v), 6) for v in std))


def sample_indices(split: Split, num_classes: int, per_class: int = 4, seed: int = 0) -> dict[int, list[int]]:
    """Pick a few sample indices per class for the preview, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for label in range(num_classes):
        members = np.flatnonzero(split.labels == label)
        chosen[label] = sorted(int(i) for i in rng.permutation(members)[:per_class])
    return chosen


# --------------------------------------------------------------------------------------------
# Sample photos for the TTA page


@dataclass(frozen=True)
class SamplePhoto:
    name: str  # key of SAMPLE_PHOTO_FILES, e.g. "chelsea"
    file_name: str
    data: bytes  # the file's bytes, to be decoded by core.images.decode_image like any upload


def sample_photos() -> list[SamplePhoto]:
    """scikit-image's bundled sample photos as file bytes (no network; missing files are left out)."""
    from skimage import data as skdata

    folder = Path(skdata.data_dir)
    photos = []
    for name, file_name in SAMPLE_PHOTO_FILES.items():
        path = folder / file_name
        if path.is_file():
            photos.append(SamplePhoto(name, file_name, path.read_bytes()))
        else:
            logger.warning("sample photo %s not found in %s", file_name, folder)
    return photos
