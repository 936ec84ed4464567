"""Per-layer summary of a lab network: output shapes, parameters, multiply-accumulates.

The network is built on PyTorch's "meta" device, where tensors carry shapes but no storage. One
forward pass with hooks then records every layer, and no weight is ever initialised or
multiplied (see `summarize_config`). So a config too large to hold in memory (base width 512,
hundreds of blocks) can still be counted.

MACs follow the convention of torchvision's `_ops` metadata: multiply-accumulates of
convolutions and fully connected layers only. BatchNorm, ReLU, pooling and the residual
addition are not counted; bias additions are not counted either. With that convention the
canonical ImageNet models land within 0.01 % of torchvision's published figures.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import LabError
from core.groups import default_groups, group_of
from core.models import ResNetConfig, build_resnet, canonical_name, validate, weighted_depth

logger = logging.getLogger(__name__)

# Summary time grows with the number of blocks. Past this many, the page would wait tens of seconds
# (measured on a 2-core machine). CIFAR's ResNet-1202 (n = 200, 600 blocks) stays well inside.
MAX_SUMMARY_BLOCKS = 1000

# Networks up to this many parameters (400 MB in float32) get real, uninitialised CPU storage
# for the summary pass; ResNet-152 has 60 million.
MAX_CPU_SUMMARY_PARAMS = 100_000_000

# Shortcut kinds of a block, as drawn in the diagram and shown in the table.
SHORTCUT_IDENTITY = "identity"  # same shape: x is added unchanged
SHORTCUT_PROJECTION = "projection"  # 1×1 convolution + BN (option B)
SHORTCUT_ZERO_PAD = "zero_pad"  # subsample and pad channels with zeros (option A)
SHORTCUT_NONE = "none"  # plain twin: no shortcut at all


@dataclass(frozen=True)
class LayerRow:
    """One call of one leaf module during the forward pass."""

    name: str  # module path as in the state dict: "layer1.0.conv1"
    kind: str  # module class: "Conv2d", "BatchNorm2d", "ZeroPadShortcut", ...
    group: str  # layer group from core.groups: "stem", "layer1", ..., "head"
    block: str | None  # "layer1.0" for layers inside a residual block, else None
    on_shortcut: bool  # True for the downsample path of a block
    output_shape: tuple[int, ...]  # without the batch dimension: (C, H, W) or (features,)
    params: int  # parameters owned by this module (counted on its first call only)
    trainable_params: int  # of which requires_grad is True
    macs: int  # multiply-accumulates for one input image
    detail: str  # language-neutral shape of the operation: "3×3 /2", "64→128"

    @property
    def trainable(self) -> bool | None:
        """True or False for a module with parameters; None for one without (ReLU, pooling)."""
        if self.params == 0:
            return None
        return self.trainable_params == self.params


@dataclass(frozen=True)
class BlockSummary:
    """One residual block: its branch F(x), its shortcut, and their totals."""

    name: str  # "layer2.0"
    group: str  # "layer2"
    kind: str  # "BasicBlock" or "Bottleneck"
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    shortcut: str  # one of the SHORTCUT_* kinds
    params: int
    macs: int


@dataclass(frozen=True)
class GroupSummary:
    """Totals of one layer group (the stem, a stage, the head)."""

    name: str
    params: int
    trainable_params: int
    macs: int
    num_blocks: int
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSummary:
    """Everything the Arquitectura page shows about one network."""

    input_shape: tuple[int, ...]  # (C, H, W)
    output_shape: tuple[int, ...]  # (num_classes,)
    rows: tuple[LayerRow, ...]
    blocks: tuple[BlockSummary, ...]
    groups: tuple[GroupSummary, ...]
    total_params: int
    trainable_params: int
    total_macs: int
    weighted_layers: int  # convolutions and fc on the main path, counted from the rows
    config: dict = field(default_factory=dict)  # ResNetConfig.to_dict() when built from a config
    canonical_name: str | None = None
    seconds: float = 0.0  # time spent building and summarising

    def group(self, name: str) -> GroupSummary:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(size) for size in tensor.shape[1:])  # drop the batch dimension


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call for one image (torchvision's `_ops` convention)."""
    if isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        per_output = module.in_channels // module.groups * kernel_h * kernel_w
        return math.prod(output.shape[1:]) * per_output
    if isinstance(module, nn.Linear):
        return math.prod(output.shape[1:]) * module.in_features
    return 0


def _layer_detail(module: nn.Module) -> str:
    """Describe the operation's geometry in a few language-neutral symbols."""
    if isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        stride = module.stride[0]
        strided = f" /{stride}" if stride > 1 else ""
        return f"{kernel_h}×{kernel_w}{strided}, {module.in_channels}→{module.out_channels}"
    if isinstance(module, nn.MaxPool2d):
        return f"{module.kernel_size}×{module.kernel_size} /{module.stride}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features}→{module.out_features}"
    if isinstance(module, nn.BatchNorm2d):
        return f"{module.num_features}"
    stride = getattr(module, "stride", 1)
    extra = getattr(module, "extra_channels", None)
    if extra is not None:  # the zero-padding shortcut
        return f"/{stride}, +{extra}"
    return ""


def _shortcut_kind(block: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> str:
    if not getattr(block, "skip", True):
        return SHORTCUT_NONE
    downsample = getattr(block, "downsample", None)
    if downsample is None:
        return SHORTCUT_IDENTITY
    if any(True for _ in downsample.parameters()):
        return SHORTCUT_PROJECTION
    return SHORTCUT_ZERO_PAD if input_shape != output_shape else SHORTCUT_IDENTITY


def _owning_block(name: str, block_names: set[str]) -> str | None:
    """Return "layer2.3" for "layer2.3.downsample.0": blocks are always two levels deep."""
    candidate = ".".join(name.split(".")[:2])
    return candidate if candidate in block_names else None


class _ForwardRecorder:
    """Forward hooks that turn one pass into layer rows and block shapes."""

    def __init__(self, model: nn.Module) -> None:
        self.groups = default_groups(model)
        self.block_modules = dict(model.blocks())
        self.block_names = set(self.block_modules)
        self.module_names = {module: name for name, module in model.named_modules()}
        self.rows: list[LayerRow] = []
        self.block_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._seen: set[str] = set()
        self._stage_seen = False

    def hooks(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        block_ids = {id(module) for module in self.block_modules.values()}
        handles = []
        for module in model.modules():
            if id(module) in block_ids:
                handles.append(module.register_forward_hook(self.on_block))
            elif not any(True for _ in module.children()):
                handles.append(module.register_forward_hook(self.on_leaf))
        return handles

    def on_leaf(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Identity):  # BN switched off, or the CIFAR stem's absent max-pool
            return
        name = self.module_names[module]
        try:
            group = group_of(name, self.groups)
        except LabError:  # parameter-free modules outside the groups' prefixes: relu, maxpool, avgpool
            group = "head" if self._stage_seen else "stem"
        self._stage_seen = self._stage_seen or group.startswith("layer")

        parameters = [] if name in self._seen else list(module.parameters(recurse=False))
        self._seen.add(name)
        self.rows.append(LayerRow(
            name=name,
            kind=type(module).__name__,
            group=group,
            block=_owning_block(name, self.block_names),
            on_shortcut=".downsample" in name,
            output_shape=_shape(output),
            params=sum(p.numel() for p in parameters),
            trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
            macs=_layer_macs(module, output),
            detail=_layer_detail(module),
        ))

    def on_block(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.block_shapes[self.module_names[module]] = (_shape(inputs[0]), _shape(output))


def summarize_model(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> ModelSummary:
    """Run one forward pass of a lab ResNet with hooks and collect the summary.

    `model` may live on any device, "meta" included; `input_shape` is (C, H, W). Shapes and MACs
    are per image, so `batch_size` may be 0: PyTorch's kernels then compute every shape and no
    arithmetic. The model is put in eval mode for the pass and returned to its previous mode.
    """
    recorder = _ForwardRecorder(model)
    handles = recorder.hooks(model)
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.empty((batch_size, *input_shape), device=device))  # (B, num_classes)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    rows = recorder.rows
    blocks = _block_summaries(rows, recorder.block_modules, recorder.block_shapes)
    return ModelSummary(
        input_shape=tuple(input_shape),
        output_shape=_shape(output),
        rows=tuple(rows),
        blocks=blocks,
        groups=_group_summaries(model, rows, recorder.groups, blocks),
        # model.parameters() also holds parameters outside any leaf module (Fixup's block scalar).
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_macs=sum(row.macs for row in rows),
        weighted_layers=sum(1 for row in rows if row.kind in ("Conv2d", "Linear") and not row.on_shortcut),
    )


def _block_summaries(rows: list[LayerRow], block_modules: dict[str, nn.Module],
                     block_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> tuple[BlockSummary, ...]:
    macs_by_block: dict[str, int] = {}
    for row in rows:
        if row.block is not None:
            macs_by_block[row.block] = macs_by_block.get(row.block, 0) + row.macs

    summaries = []
    for name, block in block_modules.items():
        input_shape, output_shape = block_shapes[name]
        summaries.append(BlockSummary(
            name=name,
            group=name.split(".")[0],
            kind=type(block).__name__,
            input_shape=input_shape,
            output_shape=output_shape,
            shortcut=_shortcut_kind(block, input_shape, output_shape),
            params=sum(p.numel() for p in block.parameters()),
            macs=macs_by_block.get(name, 0),
        ))
    return tuple(summaries)


def _group_summaries(model: nn.Module, rows: list[LayerRow], groups: dict[str, list[str]],
                     blocks: tuple[BlockSummary, ...]) -> tuple[GroupSummary, ...]:
    parameters = {group: [] for group in groups}
    for name, parameter in model.named_parameters():
        parameters[group_of(name, groups)].append(parameter)

    summaries = []
    for group in groups:
        group_rows = [row for row in rows if row.group == group]
        summaries.append(GroupSummary(
            name=group,
            params=sum(p.numel() for p in parameters[group]),
            trainable_params=sum(p.numel() for p in parameters[group] if p.requires_grad),
            macs=sum(row.macs for row in group_rows),
            num_blocks=sum(1 for block in blocks if block.group == group),
            output_shape=group_rows[-1].output_shape if group_rows else (),
        ))
    return tuple(summaries)


def summarize_config(config: ResNetConfig) -> ModelSummary:
    """Build `config` without computing any weights and summarise it; LabError for a bad config.

    Weight values never enter a summary, so the network is built on the meta device with
    PyTorch's default init (Fixup keeps its own: it adds one parameter per block). Up to
    MAX_CPU_SUMMARY_PARAMS, the weights then get uninitialised CPU storage and the pass runs on
    an empty batch: CPU kernels find shapes much faster than meta ones, whose BatchNorm is a
    Python decomposition. Larger networks stay on the meta device and allocate nothing.
    """
    validate(config)
    if sum(config.stage_blocks) > MAX_SUMMARY_BLOCKS:
        raise LabError("arch.err_too_many_blocks", value=sum(config.stage_blocks), maximum=MAX_SUMMARY_BLOCKS)

    started = time.perf_counter()
    shape_config = config if config.init == "fixup" else config.replace(init="default")
    with torch.device("meta"):
        model = build_resnet(shape_config)
    batch_size = 1
    if sum(p.numel() for p in model.parameters()) <= MAX_CPU_SUMMARY_PARAMS:
        model = model.to_empty(device="cpu")
        batch_size = 0
    summary = summarize_model(model, (config.in_channels, config.input_size, config.input_size), batch_size)
    seconds = time.perf_counter() - started
    logger.info("summarised %s (%d blocks) in %.2f s", canonical_name(config) or "custom network",
                sum(config.stage_blocks), seconds)

    if summary.weighted_layers != weighted_depth(config):
        raise RuntimeError(f"counted {summary.weighted_layers} weighted layers, "
                           f"core.models says {weighted_depth(config)}")
    return dataclasses.replace(summary, config=config.to_dict(), canonical_name=canonical_name(config),
                               seconds=seconds)
