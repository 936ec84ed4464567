"""Test-time augmentation (TTA): deterministic views of an image, one batch per image, merged answers.

A view is a fixed geometric transform of the image (flip, crop, zoom, small rotation). Every view
of one image goes through the model in a single batch, in eval mode under `torch.inference_mode`,
so BatchNorm uses its running statistics and one image's logits do not depend on what else shares
the batch. The merged prediction is compared with the identity view alone, the plain prediction.

Views are cut from the decoded image with torchvision.transforms.v2 functional ops, following the
preprocessing the model was trained with (`ViewGeometry`): the identity view *is* that
preprocessing's evaluation transform, and every other view keeps its exact output size whatever
the aspect ratio or size of the image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from core.errors import LabError

logger = logging.getLogger(__name__)

# Selectable families, in the fixed order their views are stacked into the batch.
VIEW_FAMILIES = ("identity", "hflip", "vflip", "five_crop", "ten_crop", "scales", "rotations")
MERGE_MODES = ("mean_prob", "mean_logit", "max")
DEFAULT_MERGE = "mean_prob"

# Zoom relative to the identity view: below 1 shows more of the image (the border is padded with
# the mean colour, i.e. 0 after normalisation), above 1 zooms into the centre.
SCALE_FACTORS = (0.8, 0.9, 1.1, 1.25)
# Small rotations in degrees, counter-clockwise; corners are filled with the mean colour.
ROTATION_DEGREES = (-10.0, -5.0, 5.0, 10.0)
# The five/ten-crop canvas is at least the crop enlarged by 256/224, the ratio of ImageNet's
# evaluation resize to its crop, so the corner crops differ from the centre one even when the
# preprocessing resizes straight to the input size.
CROP_CANVAS_RATIO = 256 / 224
# Beyond this aspect ratio the long side is centre-cropped before any view is cut: a 1×5000 strip
# resized to a 256-pixel short side would need gigabytes, and no view looks that far out.
MAX_VIEW_ASPECT = 16.0
# A single forward pass never holds more views than this (about 0.6 GB of activations for a
# ResNet-18 at 224 px); larger view sets are split, which leaves every view's logits unchanged.
MAX_VIEWS_PER_PASS = 32

CROP_POSITIONS = ("tl", "tr", "bl", "br", "c")  # the order of torchvision's five_crop

SAMPLE_PHOTOS = {  # name -> file shipped inside scikit-image's data package (no download)
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
}


@dataclass(frozen=True)
class ViewGeometry:
    """How the model input is cut from an image: the evaluation transform of its preprocessing.

    `resize` is the short side the image is resized to (aspect kept) before the centre crop to
    `input_size`, as in torchvision's Resize(256) + CenterCrop(224); `None` resizes the image
    straight to `input_size`, aspect not kept.
    """

    input_size: tuple[int, int]  # (H, W) of the model input, in pixels
    resize: int | None  # short side before the centre crop; None = resize straight to input_size
    mean: tuple[float, ...]  # per channel, applied to values in [0, 1]
    std: tuple[float, ...]
    channels: int = 3  # 3 = RGB, 1 = grayscale

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise LabError("tta.err_geometry", channels=self.channels, mean=len(self.mean), std=len(self.std))


@dataclass(frozen=True)
class View:
    """One deterministic transform. `source` says where its pixels come from before the flips and
    the rotation: the identity input, a corner or centre crop of the crop canvas, or a zoom."""

    name: str  # stable identifier, also the catalog suffix of its label: "tta.view_<name>"
    source: str  # "identity" | "crop" | "scale"
    position: str = "c"  # crop position, one of CROP_POSITIONS
    scale: float = 1.0  # zoom factor of a "scale" view
    angle: float = 0.0  # degrees, counter-clockwise
    hflip: bool = False
    vflip: bool = False


def _family_views(family: str) -> list[View]:
    if family == "identity":
        return [View("identity", "identity")]
    if family == "hflip":
        return [View("hflip", "identity", hflip=True)]
    if family == "vflip":
        return [View("vflip", "identity", vflip=True)]
    if family == "five_crop":
        return [View(f"crop_{p}", "crop", position=p) for p in CROP_POSITIONS]
    if family == "ten_crop":  # torchvision's order: the five crops, then their mirror images
        return _family_views("five_crop") + [
            View(f"crop_{p}_hflip", "crop", position=p, hflip=True) for p in CROP_POSITIONS
        ]
    if family == "scales":
        return [View(f"scale_{s:g}", "scale", scale=s) for s in SCALE_FACTORS]
    if family == "rotations":
        return [View(f"rot_{a:+g}", "identity", angle=a) for a in ROTATION_DEGREES]
    raise LabError("tta.err_unknown_family", family=family, allowed=", ".join(VIEW_FAMILIES))


def expand_views(families: Iterable[str]) -> list[View]:
    """Return the views of `families` in the fixed family order, each view once.

    Five-crop and ten-crop share their first five views, so selecting both gives ten views.
    """
    wanted = set(families)
    unknown = sorted(wanted - set(VIEW_FAMILIES))
    if unknown:
        raise LabError("tta.err_unknown_family", family=", ".join(unknown), allowed=", ".join(VIEW_FAMILIES))
    views: dict[str, View] = {}
    for family in VIEW_FAMILIES:
        if family in wanted:
            for view in _family_views(family):
                views.setdefault(view.name, view)
    return list(views.values())


# --- cutting views --------------------------------------------------------------------------


def image_to_uint8(image: Image.Image, channels: int) -> torch.Tensor:
    """Decoded PIL image -> (C, H, W) uint8 tensor with the model's channel count."""
    mode = "L" if channels == 1 else "RGB"
    return TF.pil_to_tensor(image.convert(mode) if image.mode != mode else image)


def _limit_aspect(pixels: torch.Tensor) -> torch.Tensor:
    height, width = pixels.shape[-2:]
    short = min(height, width)
    longest = max(1, int(short * MAX_VIEW_ASPECT))
    if max(height, width) <= longest:
        return pixels
    return TF.center_crop(pixels, [min(height, longest), min(width, longest)])


class _ViewCutter:
    """Cuts views from one image; each intermediate resize is made once and shared by the views."""

    def __init__(self, pixels: torch.Tensor, geometry: ViewGeometry) -> None:
        self.pixels = _limit_aspect(pixels)  # (C, H, W) uint8
        self.geometry = geometry
        self._frames: dict[tuple, torch.Tensor] = {}
        self._identity: torch.Tensor | None = None
        self._crops: dict[str, torch.Tensor] | None = None

    def _resized(self, size: list[int]) -> torch.Tensor:
        """The image resized to `size` (torchvision semantics: one int = the short side), normalised."""
        key = tuple(size)
        if key not in self._frames:
            resized = TF.resize(self.pixels, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            as_float = TF.to_dtype(resized, torch.float32, scale=True)
            self._frames[key] = TF.normalize(as_float, list(self.geometry.mean), list(self.geometry.std))
        return self._frames[key]  # (C, h, w)

    def _frame(self, scale: float) -> torch.Tensor:
        """The image resized as the preprocessing resizes it, times `scale`."""
        if self.geometry.resize is None:
            height, width = self.geometry.input_size
            return self._resized([max(1, round(height * scale)), max(1, round(width * scale))])
        return self._resized([max(1, round(self.geometry.resize * scale))])

    def identity(self) -> torch.Tensor:
        if self._identity is None:
            self._identity = TF.center_crop(self._frame(1.0), list(self.geometry.input_size))
        return self._identity

    def crop(self, position: str) -> torch.Tensor:
        if self._crops is None:
            height, width = self.geometry.input_size
            if self.geometry.resize is None:
                # One pixel more than the input at least, so that tiny inputs still get distinct crops.
                canvas = self._resized([
                    max(height + 1, round(height * CROP_CANVAS_RATIO)),
                    max(width + 1, round(width * CROP_CANVAS_RATIO)),
                ])
            else:
                # The short side covers the longer input side, so both sides are at least the crop.
                canvas = self._resized([max(self.geometry.resize, math.ceil(max(height, width) * CROP_CANVAS_RATIO))])
            self._crops = dict(zip(CROP_POSITIONS, TF.five_crop(canvas, [height, width]), strict=True))
        return self._crops[position]

    def zoom(self, scale: float) -> torch.Tensor:
        # center_crop pads a frame smaller than the input with zeros: the mean colour.
        return TF.center_crop(self._frame(scale), list(self.geometry.input_size))

    def cut(self, view: View) -> torch.Tensor:
        if view.source == "identity":
            pixels = self.identity()
        elif view.source == "crop":
            pixels = self.crop(view.position)
        else:
            pixels = self.zoom(view.scale)
        if view.hflip:
            pixels = TF.horizontal_flip(pixels)
        if view.vflip:
            pixels = TF.vertical_flip(pixels)
        if view.angle:
            pixels = TF.rotate(
                pixels,
                view.angle,
                interpolation=TF.InterpolationMode.BILINEAR,
                fill=[0.0] * self.geometry.channels,
            )
        return pixels


def make_views(image: Image.Image, geometry: ViewGeometry, views: Sequence[View]) -> torch.Tensor:
    """Return the views of `image` stacked in the given order: (V, C, H, W) float32, normalised."""
    if not views:
        raise LabError("tta.err_no_views")
    cutter = _ViewCutter(image_to_uint8(image, geometry.channels), geometry)
    return torch.stack([cutter.cut(view) for view in views])


def model_input(image: Image.Image, geometry: ViewGeometry) -> torch.Tensor:
    """The plain model input of `image` (the identity view): (C, H, W) float32, normalised."""
    return make_views(image, geometry, [View("identity", "identity")])[0]


def to_display(pixels: torch.Tensor, geometry: ViewGeometry) -> np.ndarray:
    """Undo the normalisation of one view (C, H, W) -> (H, W, 3) uint8, for thumbnails."""
    mean = torch.tensor(geometry.mean).view(-1, 1, 1)
    std = torch.tensor(geometry.std).view(-1, 1, 1)
    restored = (pixels.detach().cpu() * std + mean).clamp(0.0, 1.0)
    if restored.shape[0] == 1:
        restored = restored.expand(3, -1, -1)
    return (restored * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


# --- inference and merging ------------------------------------------------------------------


def forward_views(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Logits of a batch of views, (V, C, H, W) -> (V, K) float32 on the CPU.

    Eval mode and inference mode make each row a function of its own view alone: BatchNorm
    uses running statistics and no dropout or batch statistic couples the rows.
    """
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        chunks = [model(chunk.to(device)) for chunk in batch.split(MAX_VIEWS_PER_PASS)]
    return torch.cat(chunks).float().cpu()


def merge(logits: torch.Tensor, mode: str = DEFAULT_MERGE) -> torch.Tensor:
    """Merge the views of the last-but-one axis: (..., V, K) logits -> (..., K) probabilities.

    mean_prob: average of the views' softmax; mean_logit: softmax of the averaged logits;
    max: each class's highest probability over the views, renormalised to sum to 1 so the three
    modes are read on the same scale (the argmax is unaffected by the renormalisation).
    """
    if mode == "mean_prob":
        return logits.softmax(dim=-1).mean(dim=-2)
    if mode == "mean_logit":
        return logits.mean(dim=-2).softmax(dim=-1)
    if mode == "max":
        peak = logits.softmax(dim=-1).amax(dim=-2)
        return peak / peak.sum(dim=-1, keepdim=True)
    raise LabError("tta.err_unknown_merge", mode=mode, allowed=", ".join(MERGE_MODES))


@dataclass
class TTAPrediction:
    """Every view's logits for one image, the merged probabilities and the identity reference."""

    views: list[View]  # batch order: identity first, then the selected views
    logits: torch.Tensor  # (V, K)
    merged_views: list[int]  # indices into `views` that the merge used
    merge_mode: str
    merged: torch.Tensor  # (K,) probabilities
    reference: torch.Tensor  # (K,) probabilities of the identity view alone
    inputs: torch.Tensor  # (V, C, H, W), the exact model inputs

    @property
    def view_probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=-1)


def batch_views(families: Iterable[str]) -> list[View]:
    """The views an image's batch holds: the identity first (the reference), then the selected
    views in the fixed order. The identity joins the merge only when "identity" is selected."""
    selected = expand_views(families)
    if not selected:
        raise LabError("tta.err_no_views")
    return expand_views(["identity"]) + [view for view in selected if view.name != "identity"]


def run_views(
    model: nn.Module, image: Image.Image, geometry: ViewGeometry, views: Sequence[View]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut `views` from `image` and run them as one batch: ((V, C, H, W) inputs, (V, K) logits)."""
    inputs = make_views(image, geometry, views)
    return inputs, forward_views(model, inputs)


def combine(
    views: Sequence[View],
    inputs: torch.Tensor,
    logits: torch.Tensor,
    families: Iterable[str],
    merge_mode: str = DEFAULT_MERGE,
) -> TTAPrediction:
    """Merge the views of `families` out of a batch made by `batch_views` (identity first)."""
    if not views or views[0].name != "identity":
        raise LabError("tta.err_no_views")
    selected_names = {view.name for view in expand_views(families)}
    merged_views = [index for index, view in enumerate(views) if view.name in selected_names]
    if not merged_views:
        raise LabError("tta.err_no_views")
    return TTAPrediction(
        views=list(views),
        logits=logits,
        merged_views=merged_views,
        merge_mode=merge_mode,
        merged=merge(logits[merged_views], merge_mode),
        reference=logits[0].softmax(dim=-1),
        inputs=inputs,
    )


def predict_tta(
    model: nn.Module,
    image: Image.Image,
    geometry: ViewGeometry,
    families: Iterable[str],
    merge_mode: str = DEFAULT_MERGE,
) -> TTAPrediction:
    """Run every view of `image` in one batch and merge the views of `families`.

    The identity view is always in the batch as the reference (the plain prediction); it joins
    the merge only when "identity" is among `families`.
    """
    families = list(families)
    views = batch_views(families)
    inputs, logits = run_views(model, image, geometry, views)
    return combine(views, inputs, logits, families, merge_mode)


def top_k(probs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """[(class index, probability)] of the k most likely classes, most likely first."""
    values, indices = probs.topk(min(k, probs.numel()))
    return [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]


@dataclass
class Comparison:
    """What TTA changed relative to the identity view alone."""

    reference_top: int  # class index predicted by the identity view
    merged_top: int  # class index predicted by the merge
    reference_confidence: float  # its probability
    merged_confidence: float
    agreement: float  # share of merged views whose top-1 equals the merged top-1
    gained: list[tuple[int, float]]  # (class, probability change), largest gain first
    lost: list[tuple[int, float]]  # (class, probability change), largest loss first
    per_view_top: list[int] = field(default_factory=list)  # top-1 of every merged view


def compare_to_identity(prediction: TTAPrediction, k: int = 5) -> Comparison:
    delta = prediction.merged - prediction.reference
    order = torch.argsort(delta, descending=True)
    gained = [(int(i), float(delta[i])) for i in order[:k] if delta[i] > 0]
    lost = [(int(i), float(delta[i])) for i in order.flip(0)[:k] if delta[i] < 0]
    per_view_top = prediction.logits[prediction.merged_views].argmax(dim=-1).tolist()
    merged_top = int(prediction.merged.argmax())
    reference_top = int(prediction.reference.argmax())
    return Comparison(
        reference_top=reference_top,
        merged_top=merged_top,
        reference_confidence=float(prediction.reference[reference_top]),
        merged_confidence=float(prediction.merged[merged_top]),
        agreement=sum(top == merged_top for top in per_view_top) / len(per_view_top),
        gained=gained,
        lost=lost,
        per_view_top=per_view_top,
    )


# --- evaluation on a labelled set -----------------------------------------------------------


@dataclass
class EvaluationReport:
    """Accuracy on a labelled set with and without TTA."""

    n_images: int
    view_names: list[str]  # batch order, identity first
    single_view_accuracy: dict[str, float]  # view name -> accuracy of that view alone
    set_accuracy: dict[str, dict[str, float]]  # view set name -> merge mode -> accuracy
    set_sizes: dict[str, int]  # view set name -> number of views merged

    @property
    def baseline(self) -> float:
        """Accuracy of the identity view alone: the plain prediction, no TTA."""
        return self.single_view_accuracy["identity"]


def view_sets(families: Iterable[str]) -> dict[str, list[str]]:
    """The view sets an evaluation compares, as view names: the identity alone, the identity with
    each selected family, and all selected families together ("all")."""
    chosen = [family for family in VIEW_FAMILIES if family in set(families) and family != "identity"]
    sets = {"identity": ["identity"]}
    for family in chosen:
        sets[family] = [view.name for view in expand_views(["identity", family])]
    if len(chosen) > 1:
        sets["all"] = [view.name for view in expand_views(["identity", *chosen])]
    return sets


def evaluate(
    model: nn.Module,
    samples: Iterable[tuple[Image.Image, int]],
    geometry: ViewGeometry,
    families: Iterable[str],
    modes: Sequence[str] = MERGE_MODES,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Accuracy of every single view and of every view set under every merge mode.

    Each image's views run in one batch, once; the sets and modes are then merged from the stored
    logits, so comparing them costs no extra forward pass.
    """
    families = list(families)
    views = expand_views(["identity", *families])
    names = [view.name for view in views]
    logits_per_image: list[torch.Tensor] = []
    labels: list[int] = []
    for index, (image, label) in enumerate(samples):
        logits_per_image.append(forward_views(model, make_views(image, geometry, views)))
        labels.append(int(label))
        if progress is not None:
            progress(index + 1)
    if not labels:
        raise LabError("tta.err_empty_eval")

    all_logits = torch.stack(logits_per_image)  # (N, V, K)
    targets = torch.tensor(labels)
    single = {
        name: float((all_logits[:, v].argmax(dim=-1) == targets).float().mean()) for v, name in enumerate(names)
    }
    sets = view_sets(families)
    set_accuracy: dict[str, dict[str, float]] = {}
    for set_name, members in sets.items():
        columns = [names.index(member) for member in members]
        set_accuracy[set_name] = {
            mode: float((merge(all_logits[:, columns], mode).argmax(dim=-1) == targets).float().mean())
            for mode in modes
        }
    logger.info("TTA evaluation on %d images, %d views: identity accuracy %.4f", len(labels), len(names), single["identity"])
    return EvaluationReport(
        n_images=len(labels),
        view_names=names,
        single_view_accuracy=single,
        set_accuracy=set_accuracy,
        set_sizes={name: len(members) for name, members in sets.items()},
    )


# --- embedded sample photos -----------------------------------------------------------------


def sample_photo_bytes(name: str) -> bytes:
    """Raw bytes of a photo that ships with scikit-image (no network), for the shared decoder."""
    if name not in SAMPLE_PHOTOS:
        raise LabError("tta.err_unknown_sample", name=name, allowed=", ".join(SAMPLE_PHOTOS))
    return resources.files("skimage.data").joinpath(SAMPLE_PHOTOS[name]).read_bytes()
