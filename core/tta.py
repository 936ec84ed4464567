"""Test-time augmentation (TTA): deterministic views of an image, one batch per image, merged predictions.

A view is a fixed geometric transform of the image (flip, crop, zoom, small rotation). Every view
of one image goes through the model in a single batch, in eval mode under `torch.inference_mode`,
so BatchNorm uses its running statistics and one image's logits do not depend on what else shares
the batch. The merged prediction is compared with the identity view alone, the plain prediction.

Views follow the preprocessing the model was trained with (`core.data.Preprocessing`): the
identity view *is* that preprocessing's output. The other views resize the decoded image with the
same policy and interpolation (Pillow, as the preprocessing does), then crop, flip and rotate the
normalised tensor with torchvision.transforms.v2 functional ops. Every view has exactly the input
size, whatever the aspect ratio or size of the image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from core import weights
from core.checkpoints import load_run_model
from core.data import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, Preprocessing
from core.errors import LabError
from core.models import ResNetConfig, build_resnet

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
# The five/ten-crop canvas is at least the input enlarged by 256/224, the ratio of ImageNet's
# evaluation resize to its crop, so the corner crops differ from the centre one even when the
# preprocessing resizes straight to the input size.
CROP_CANVAS_RATIO = 256 / 224
# Beyond this aspect ratio the long side is centre-cropped before any view is cut (the identity
# included, and noted): a 1×5000 strip resized to a 256-pixel short side would need about a
# gigabyte, and no view looks that far out.
MAX_VIEW_ASPECT = 16
# Frames other than the identity are resized from a copy box-reduced (exact pixel averages) to at
# most this many times the largest frame, so a 40-megapixel photo is not resampled six times.
WORKING_SIZE_FACTOR = 2
# A single forward pass contains at most this many views (about 0.6 GB of activations for a
# ResNet-18 at 224 px, an estimate). Larger batches are split, and the logits stay the same.
MAX_VIEWS_PER_PASS = 32

CROP_POSITIONS = ("tl", "tr", "bl", "br", "c")  # the order of torchvision's five_crop


@dataclass(frozen=True)
class View:
    """One deterministic transform. `source` is where its pixels come from before the flips and the
    rotation: the identity input, a corner or centre crop of the crop canvas, or a zoom."""

    name: str  # stable identifier, also the catalog suffix of its label: "tta.view_<name>"
    source: str  # "identity" | "crop" | "scale"
    position: str = "c"  # crop position, one of CROP_POSITIONS
    scale: float = 1.0  # zoom factor of a "scale" view
    angle: float = 0.0  # degrees, counter-clockwise
    hflip: bool = False
    vflip: bool = False

    @property
    def label_key(self) -> str:
        """Catalog key of the view's label (its parameters go in as placeholders)."""
        if self.source == "crop":
            return "tta.view_crop_hflip" if self.hflip else "tta.view_crop"
        if self.source == "scale":
            return "tta.view_scale"
        if self.angle:
            return "tta.view_rotation"
        return f"tta.view_{self.name}"

    @property
    def label_params(self) -> dict[str, object]:
        return {"position": self.position, "scale": f"{self.scale:g}", "angle": f"{self.angle:+g}"}


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
    requested = set(families)
    unknown = sorted(requested - set(VIEW_FAMILIES))
    if unknown:
        raise LabError("tta.err_unknown_family", family=", ".join(unknown), allowed=", ".join(VIEW_FAMILIES))
    views: dict[str, View] = {}
    for family in VIEW_FAMILIES:
        if family in requested:
            for view in _family_views(family):
                views.setdefault(view.name, view)
    return list(views.values())


# --- cutting views --------------------------------------------------------------------------


def limit_aspect(image: Image.Image) -> Image.Image:
    """Centre-crop the long side to MAX_VIEW_ASPECT times the short side (no-op for usual photos)."""
    width, height = image.size
    longest = min(width, height) * MAX_VIEW_ASPECT
    if max(width, height) <= longest:
        return image
    new_width, new_height = min(width, longest), min(height, longest)
    left, top = (width - new_width) // 2, (height - new_height) // 2
    return image.crop((left, top, left + new_width, top + new_height))


class _ViewCutter:
    """Cuts the views of one image; each resized frame is made once and shared by its views.

    The identity is `preprocessing(image)`, the very input training and plain prediction use.
    Zooms and crops resize the image the way the preprocessing's policy does ("stretch",
    "resize_crop" or "letterbox"), only to a different size, then centre-crop (or pad with 0, the
    mean colour) or five-crop the normalised frame to the input size.
    """

    def __init__(self, image: Image.Image, preprocessing: Preprocessing) -> None:
        self.image = limit_aspect(image)
        self.pre = preprocessing
        self.side = preprocessing.input_size
        self._working: Image.Image | None = None
        self._frames: dict[tuple[int, int], torch.Tensor] = {}
        self._identity: torch.Tensor | None = None
        self._crops: dict[str, torch.Tensor] | None = None

    def _working_image(self) -> Image.Image:
        if self._working is None:
            limit = WORKING_SIZE_FACTOR * math.ceil(self._target_short(max(SCALE_FACTORS) * CROP_CANVAS_RATIO))
            factor = min(self.image.size) // max(1, limit)
            self._working = self.image.reduce(factor) if factor >= 2 else self.image
        return self._working

    def _target_short(self, scale: float) -> float:
        """Return the short side (the long one for letterbox) the policy resizes to, times `scale`."""
        base = (self.pre.resize_size or self.side) if self.pre.resize == "resize_crop" else self.side
        return base * scale

    def _frame_size(self, target: int) -> tuple[int, int]:
        """Return the (width, height) of the resized image before cropping or padding."""
        width, height = self._working_image().size
        if self.pre.resize == "stretch":
            return target, target
        ratio = target / (min(width, height) if self.pre.resize == "resize_crop" else max(width, height))
        return max(1, round(width * ratio)), max(1, round(height * ratio))

    def _frame(self, target: int) -> torch.Tensor:
        """Resize the image by the policy so its reference side is `target` pixels: (C, h, w), normalised."""
        size = self._frame_size(target)
        if size not in self._frames:
            resample = INTERPOLATIONS[self.pre.interpolation]
            resized = self._working_image().resize(size, resample)
            if self.pre.channels == 1:
                resized = resized.convert("L")
            pixels = TF.to_dtype(TF.pil_to_tensor(resized), torch.float32, scale=True)
            normalised = self.pre.normalize(pixels)
            if self.pre.resize == "letterbox":  # pad to a square with the mean colour
                normalised = TF.center_crop(normalised, [target, target])
            self._frames[size] = normalised
        return self._frames[size]

    def identity(self) -> torch.Tensor:
        if self._identity is None:
            self._identity = self.pre(self.image)
        return self._identity

    def crop(self, position: str) -> torch.Tensor:
        if self._crops is None:
            # At least one pixel larger than the input, so tiny inputs still get distinct crops, and
            # never smaller than the policy's own frame (ImageNet: the 256 frame itself).
            target = max(self.side + 1, round(self._target_short(1.0)), math.ceil(self.side * CROP_CANVAS_RATIO))
            canvas = self._frame(target)
            self._crops = dict(zip(CROP_POSITIONS, TF.five_crop(canvas, [self.side, self.side]), strict=True))
        return self._crops[position]

    def zoom(self, scale: float) -> torch.Tensor:
        # center_crop pads a frame smaller than the input with zeros: the mean colour.
        return TF.center_crop(self._frame(max(1, round(self._target_short(scale)))), [self.side, self.side])

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
                fill=[0.0] * self.pre.channels,
            )
        return pixels


def make_views(image: Image.Image, preprocessing: Preprocessing, views: Sequence[View]) -> torch.Tensor:
    """Return the views of `image` stacked in the given order: (V, C, S, S) float32, normalised."""
    if not views:
        raise LabError("tta.err_no_views")
    cutter = _ViewCutter(image, preprocessing)
    return torch.stack([cutter.cut(view) for view in views])


def model_input(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """Return the plain model input of `image` (the identity view): (C, S, S) float32, normalised."""
    return make_views(image, preprocessing, [View("identity", "identity")])[0]


def to_display(pixels: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """Undo the normalisation of one view (C, S, S) -> (S, S, 3) uint8, for thumbnails."""
    restored = preprocessing.denormalize(pixels.detach().cpu().float())
    if restored.shape[0] == 1:
        restored = restored.expand(3, -1, -1)
    return (restored * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


# --- inference and merging ------------------------------------------------------------------


def forward_views(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Return the logits of a batch of views, (V, C, H, W) -> (V, K) float32 on the CPU.

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
    inputs: torch.Tensor | None  # (V, C, S, S), the exact model inputs, when kept

    @property
    def view_probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=-1)


def batch_views(families: Iterable[str]) -> list[View]:
    """Return the views of one image's batch: the identity first (the reference), then the selected
    views in the fixed order. The identity joins the merge only when "identity" is selected."""
    selected = expand_views(families)
    if not selected:
        raise LabError("tta.err_no_views")
    return expand_views(["identity"]) + [view for view in selected if view.name != "identity"]


def run_views(
    model: nn.Module, image: Image.Image, preprocessing: Preprocessing, views: Sequence[View]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut `views` from `image` and run them as one batch: ((V, C, H, W) inputs, (V, K) logits)."""
    inputs = make_views(image, preprocessing, views)
    return inputs, forward_views(model, inputs)


def combine(
    views: Sequence[View],
    inputs: torch.Tensor | None,
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
    preprocessing: Preprocessing,
    families: Iterable[str],
    merge_mode: str = DEFAULT_MERGE,
) -> TTAPrediction:
    """Run every view of `image` in one batch and merge the views of `families`.

    The identity view is always in the batch as the reference (the plain prediction); it joins
    the merge only when "identity" is among `families`.
    """
    families = list(families)
    views = batch_views(families)
    inputs, logits = run_views(model, image, preprocessing, views)
    return combine(views, inputs, logits, families, merge_mode)


def top_k(probs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """Return [(class index, probability)] of the k most likely classes, most likely first."""
    values, indices = probs.topk(min(k, probs.numel()))
    return [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]


@dataclass
class Comparison:
    """Changes TTA made relative to the identity view alone."""

    reference_top: int  # class index predicted by the identity view
    merged_top: int  # class index predicted by the merge
    reference_confidence: float  # its probability
    merged_confidence: float
    agreement: float  # share of merged views whose top-1 equals the merged top-1
    gained: list[tuple[int, float]]  # (class, probability change), largest gain first
    lost: list[tuple[int, float]]  # (class, probability change), largest loss first
    per_view_top: list[int] = field(default_factory=list)  # top-1 of every merged view


def compare_to_identity(prediction: TTAPrediction, k: int = 5) -> Comparison:
    """Compare the merged prediction with the identity view alone; `k` caps the gained and lost lists."""
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
    """Return the view sets an evaluation compares, as view names: the identity alone, the identity
    with each selected family, and all selected families together ("all")."""
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
    preprocessing: Preprocessing,
    families: Iterable[str],
    modes: Sequence[str] = MERGE_MODES,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Accuracy of every single view and of every view set under every merge mode.

    Each image's views run once, in one batch. The sets and modes are then merged from the stored
    logits, so comparing them costs no extra forward pass.
    """
    families = list(families)
    views = expand_views(["identity", *families])
    names = [view.name for view in views]
    logits_per_image: list[torch.Tensor] = []
    labels: list[int] = []
    for index, (image, label) in enumerate(samples):
        logits_per_image.append(forward_views(model, make_views(image, preprocessing, views)))
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
    logger.info("TTA evaluation on %d images, %d views: identity accuracy %.4f",
                len(labels), len(names), single["identity"])
    return EvaluationReport(
        n_images=len(labels),
        view_names=names,
        single_view_accuracy=single,
        set_accuracy=set_accuracy,
        set_sizes={name: len(members) for name, members in sets.items()},
    )


# --- models the page can use -----------------------------------------------------------------


@dataclass
class ModelBundle:
    """A model ready for TTA: eval mode on the CPU, its class names (index order) and its input."""

    model: nn.Module
    class_names: list[str]
    preprocessing: Preprocessing
    config: ResNetConfig
    source: str  # "run" | "imagenet" | "checkpoint"
    label: str  # run id, weights name or file name
    notes: list[tuple[str, dict]] = field(default_factory=list)  # (catalog key, params) to show

    def __post_init__(self) -> None:
        if len(self.class_names) != self.config.num_classes:
            raise LabError("tta.err_class_count", classes=len(self.class_names), outputs=self.config.num_classes)
        if self.preprocessing.channels != self.config.in_channels:
            raise LabError("tta.err_channels", channels=self.preprocessing.channels, expected=self.config.in_channels)
        self.model.eval()


def generic_class_names(count: int) -> list[str]:
    return [str(index) for index in range(count)]


def bundle_from_run(run_dir: Path) -> ModelBundle:
    """Load a finished run's model with the class names and preprocessing it was trained with."""
    run_model = load_run_model(run_dir)
    config = ResNetConfig.from_dict(run_model.config["architecture"])
    names = run_model.class_names or generic_class_names(config.num_classes)
    preprocessing = Preprocessing.from_dict(run_model.preprocessing) if run_model.preprocessing else Preprocessing(
        input_size=config.input_size, channels=config.in_channels,
        mean=(0.5,) * config.in_channels, std=(0.5,) * config.in_channels)
    return ModelBundle(run_model.model, list(names), preprocessing, config, "run", Path(run_dir).name)


def bundle_from_imagenet(weights_name: str, allow_download: bool = False) -> ModelBundle:
    """Load torchvision's ImageNet ResNet, with categories and preprocessing from the weights' metadata.

    Raises LabError "data.err_weights_offline" (naming the file and folder) when the weights are
    not in the torch cache and downloading is off or impossible.
    """
    state_dict = weights.load_imagenet_state_dict(weights_name, allow_download=allow_download)
    config = weights.weights_config(weights_name)
    model = build_resnet(config)
    weights.load_into_model(model, state_dict, weights_name)
    return ModelBundle(model, weights.weights_categories(weights_name), weights.weights_preprocessing(weights_name),
                       config, "imagenet", weights_name)


def checkpoint_preprocessing(config: ResNetConfig, input_size: int | None = None,
                             normalization: str = "imagenet") -> Preprocessing:
    """Build a preprocessing for an uploaded checkpoint, which stores weights but no input recipe.

    ImageNet stem: torchvision's 256/224 recipe scaled to `input_size`; CIFAR stem: a plain
    resize. `normalization` is "imagenet" (torchvision's statistics) or "half" (mean = std = 0.5).
    """
    size = input_size or config.input_size
    channels = config.in_channels
    if normalization == "imagenet" and channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (0.5,) * channels, (0.5,) * channels
    if config.stem == "imagenet":
        return Preprocessing(input_size=size, resize="resize_crop", resize_size=round(size * CROP_CANVAS_RATIO),
                             channels=channels, mean=mean, std=std)
    return Preprocessing(input_size=size, resize="stretch", channels=channels, mean=mean, std=std)


def bundle_from_checkpoint(data: bytes, name: str, input_size: int | None = None,
                           normalization: str = "imagenet") -> ModelBundle:
    """Load an uploaded checkpoint without unpickling code, inferring the architecture from the
    parameter names and shapes. A 1000-class head gets ImageNet's category names, others their index."""
    state_dict = weights.read_checkpoint(data, name)
    config = weights.infer_config_from_state_dict(state_dict)
    model = build_resnet(config)
    weights.load_into_model(model, state_dict, name)
    notes: list[tuple[str, dict]] = []
    if weights.skip_is_ambiguous(config):
        notes.append(("tta.note_skip_ambiguous", {}))
    if config.num_classes == 1000:
        names = weights.weights_categories(weights.DEFAULT_IMAGENET_WEIGHTS[18])
        notes.append(("tta.note_imagenet_names", {}))
    else:
        names = generic_class_names(config.num_classes)
    preprocessing = checkpoint_preprocessing(config, input_size, normalization)
    return ModelBundle(model, names, preprocessing, config, "checkpoint", name, notes)


# --- labelled sets ----------------------------------------------------------------------------


def match_classes(folder_names: Sequence[str], class_names: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Map class folders to the model's output indices: exact name first, then ignoring case.

    Returns ({folder: index}, [folders that are no class of the model]).
    """
    exact = {name: index for index, name in enumerate(class_names)}
    folded: dict[str, int] = {}
    for index, name in enumerate(class_names):
        folded.setdefault(name.casefold(), index)
    mapping, unknown = {}, []
    for folder in folder_names:
        if folder in exact:
            mapping[folder] = exact[folder]
        elif folder.casefold() in folded:
            mapping[folder] = folded[folder.casefold()]
        else:
            unknown.append(folder)
    return mapping, unknown


def pick_evenly(labels: Sequence[int], limit: int, seed: int = 0) -> list[int]:
    """Return up to `limit` sorted indices, taking classes in turn (round robin over a seeded shuffle of each)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    queues = [list(rng.permutation(members)) for _, members in sorted(by_class.items())]
    chosen: list[int] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(int(queue.pop(0)))
    return sorted(chosen)
