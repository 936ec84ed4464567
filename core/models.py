"""Residual networks (He et al. 2016) and their plain twins, built from one config.

Parameter names match torchvision 0.29 `models/resnet.py` exactly (conv1, bn1, layer1.0.conv1,
layer1.0.downsample.0, fc, ...), so canonical ImageNet models load torchvision's state dicts
with `strict=True`. Like torchvision ("ResNet V1.5"), a Bottleneck puts its stride on the 3×3
convolution, not on the first 1×1 as in the original paper.

The same builder makes everything the lab compares: residual or plain, with or without
BatchNorm, projection or zero-padding shortcuts, ImageNet or CIFAR stem, and four
initialisations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import LabError

BLOCK_TYPES = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "zero_pad")
INITS = ("he", "default", "zero_gamma", "fixup")

# Stage counts of the ImageNet family (He et al. 2016, Table 1).
IMAGENET_STAGES: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
IMAGENET_BLOCK = {18: "basic", 34: "basic", 50: "bottleneck", 101: "bottleneck", 152: "bottleneck"}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)

MAX_BLOCKS_PER_STAGE = 500
MAX_STAGES = 4
MIN_WIDTH, MAX_WIDTH = 1, 512
MAX_INPUT_SIZE = 2048
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that defines a network the lab can build; saved with every run."""

    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage, layer1 first
    block: str = "basic"  # "basic" (two 3×3) or "bottleneck" (1×1, 3×3, 1×1, expansion 4)
    stem: str = "imagenet"  # "imagenet": 7×7/2 conv + 3×3/2 max-pool; "cifar": 3×3/1 conv
    base_width: int = 64  # channels of layer1 before expansion; doubles at every stage
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 224  # side of the square input, in pixels
    skip: bool = True  # False builds the plain twin: same layers, no identity path
    shortcut: str = "projection"  # on a size change: 1×1 conv + BN, or zero-padding (option A)
    batch_norm: bool = True  # False replaces every BatchNorm with the identity
    init: str = "he"  # "he" (kaiming fan_out), "default" (PyTorch), "zero_gamma", "fixup"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["stage_blocks"] = list(self.stage_blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ResNetConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabError("errors.config_unknown_fields", fields=", ".join(unknown))
        values = dict(data)
        if "stage_blocks" in values:
            values["stage_blocks"] = tuple(int(n) for n in values["stage_blocks"])
        return cls(**values)

    def replace(self, **changes: object) -> ResNetConfig:
        return dataclasses.replace(self, **changes)

    @property
    def expansion(self) -> int:
        return Bottleneck.expansion if self.block == "bottleneck" else BasicBlock.expansion


def imagenet_config(depth: int, **overrides: object) -> ResNetConfig:
    """Return the canonical ImageNet ResNet-`depth` (18, 34, 50, 101 or 152)."""
    if depth not in IMAGENET_STAGES:
        raise LabError("errors.imagenet_depth", depth=depth, allowed="18, 34, 50, 101, 152")
    config = ResNetConfig(stage_blocks=IMAGENET_STAGES[depth], block=IMAGENET_BLOCK[depth])
    return config.replace(**overrides)


def cifar_config(depth: int, block: str = "basic", **overrides: object) -> ResNetConfig:
    """Return the CIFAR ResNet of He et al. 2016 §4.2: three stages of n blocks, widths 16/32/64.

    BasicBlock depth is 6n+2; Bottleneck depth is 9n+2 (the 164-layer form of He et al. 2016b).
    The shortcut is option A (zero-padding), as in the paper's CIFAR experiments.
    """
    layers_per_block = 3 if block == "bottleneck" else 2
    per_stage, remainder = divmod(depth - 2, 3 * layers_per_block)
    if remainder or per_stage < 1:
        form = "9n+2" if block == "bottleneck" else "6n+2"
        raise LabError("errors.cifar_depth", depth=depth, form=form)
    config = ResNetConfig(
        stage_blocks=(per_stage,) * 3,
        block=block,
        stem="cifar",
        base_width=16,
        num_classes=10,
        input_size=32,
        shortcut="zero_pad",
    )
    return config.replace(**overrides)


def total_stride(config: ResNetConfig) -> int:
    """Downsampling factor from the input to the last stage's feature map."""
    stem_stride = 4 if config.stem == "imagenet" else 1
    return stem_stride * 2 ** (len(config.stage_blocks) - 1)


def validate(config: ResNetConfig) -> None:
    """Raise LabError with the value received and what is allowed, for any config we cannot build."""
    if config.block not in BLOCK_TYPES:
        raise LabError("errors.bad_choice", field="block", value=config.block, allowed=", ".join(BLOCK_TYPES))
    if config.stem not in STEMS:
        raise LabError("errors.bad_choice", field="stem", value=config.stem, allowed=", ".join(STEMS))
    if config.shortcut not in SHORTCUTS:
        raise LabError("errors.bad_choice", field="shortcut", value=config.shortcut, allowed=", ".join(SHORTCUTS))
    if config.init not in INITS:
        raise LabError("errors.bad_choice", field="init", value=config.init, allowed=", ".join(INITS))

    stages = config.stage_blocks
    if not 1 <= len(stages) <= MAX_STAGES or any(not 1 <= n <= MAX_BLOCKS_PER_STAGE for n in stages):
        raise LabError(
            "errors.stage_counts",
            value=", ".join(str(n) for n in stages) or "-",
            max_stages=MAX_STAGES,
            max_blocks=MAX_BLOCKS_PER_STAGE,
        )
    if not MIN_WIDTH <= config.base_width <= MAX_WIDTH:
        raise LabError("errors.base_width", value=config.base_width, low=MIN_WIDTH, high=MAX_WIDTH)
    if not 1 <= config.num_classes <= MAX_CLASSES:
        raise LabError("errors.num_classes", value=config.num_classes, high=MAX_CLASSES)
    if config.in_channels not in (1, 3):
        raise LabError("errors.in_channels", value=config.in_channels)

    minimum = total_stride(config)
    if not minimum <= config.input_size <= MAX_INPUT_SIZE:
        raise LabError(
            "errors.input_size",
            value=config.input_size,
            minimum=minimum,
            maximum=MAX_INPUT_SIZE,
            stages=len(stages),
        )


def weighted_depth(config: ResNetConfig) -> int:
    """Count the weighted layers on the main path as the paper does: stem conv, block convs, fc.

    Projection shortcuts are not counted, so ResNet-50 is 1 + 16·3 + 1 = 50.
    """
    layers_per_block = 3 if config.block == "bottleneck" else 2
    return 1 + layers_per_block * sum(config.stage_blocks) + 1


def canonical_name(config: ResNetConfig) -> str | None:
    """Name the network as the literature does ("ResNet-50", "Plain-34"), or None for a custom one."""
    prefix = "ResNet" if config.skip else "Plain"
    depth = weighted_depth(config)

    if config.stem == "imagenet" and config.base_width == 64 and len(config.stage_blocks) == 4:
        if IMAGENET_STAGES.get(depth) == config.stage_blocks and IMAGENET_BLOCK[depth] == config.block:
            return f"{prefix}-{depth}"
        return None

    is_cifar_shape = len(config.stage_blocks) == 3 and len(set(config.stage_blocks)) == 1
    if config.stem == "cifar" and config.base_width == 16 and is_cifar_shape:
        return f"{prefix}-{depth}"
    return None


class ZeroPadShortcut(nn.Module):
    """Option A shortcut (He et al. 2016 §4.2): subsample by `stride`, pad new channels with zeros.

    It has no parameters, so a CIFAR ResNet with it has exactly the plain twin's weights.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"zero-padding shortcut cannot reduce channels: {in_channels} -> {out_channels}")
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def _close_block(block: nn.Module, branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scale the branch (Fixup), add the shortcut unless the block is plain, then the last ReLU."""
    if block.branch_scale is not None:
        branch = branch * block.branch_scale
    if block.skip:
        identity = x if block.downsample is None else block.downsample(x)
        branch = branch + identity
    return block.relu(branch)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convolutions; the identity is added before the last ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, downsample: nn.Module | None,
                 skip: bool, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = _norm(width, batch_norm)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm)
        self.bn2 = _norm(width, batch_norm)
        self.downsample = downsample
        self.skip = skip
        self.branch_scale: nn.Parameter | None = None  # set by Fixup initialisation

    @property
    def branch_out_bn(self) -> nn.Module | None:
        return self.bn2 if isinstance(self.bn2, nn.BatchNorm2d) else None

    @property
    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return _close_block(self, out, x)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride, as torchvision's V1.5), 1×1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, downsample: nn.Module | None,
                 skip: bool, batch_norm: bool) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=not batch_norm)
        self.bn1 = _norm(width, batch_norm)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn2 = _norm(width, batch_norm)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=not batch_norm)
        self.bn3 = _norm(out_channels, batch_norm)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.skip = skip
        self.branch_scale: nn.Parameter | None = None

    @property
    def branch_out_bn(self) -> nn.Module | None:
        return self.bn3 if isinstance(self.bn3, nn.BatchNorm2d) else None

    @property
    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return _close_block(self, out, x)


class ResNet(nn.Module):
    """Stem → layer1..layerN → global average pool → fc."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        validate(config)
        self.config = config
        block_class = Bottleneck if config.block == "bottleneck" else BasicBlock
        batch_norm = config.batch_norm

        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_channels, config.base_width, 7, stride=2, padding=3, bias=not batch_norm)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, config.base_width, 3, stride=1, padding=1, bias=not batch_norm)
        self.bn1 = _norm(config.base_width, batch_norm)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if config.stem == "imagenet" else nn.Identity()

        in_channels = config.base_width
        for index, num_blocks in enumerate(config.stage_blocks):
            width = config.base_width * 2**index
            stride = 1 if index == 0 else 2
            stage, in_channels = self._make_stage(block_class, in_channels, width, num_blocks, stride)
            setattr(self, f"layer{index + 1}", stage)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, config.num_classes)
        initialise(self, config.init)

    def _make_stage(self, block_class: type, in_channels: int, width: int, num_blocks: int,
                    stride: int) -> tuple[nn.Sequential, int]:
        config = self.config
        out_channels = width * block_class.expansion
        blocks = []
        for index in range(num_blocks):
            block_stride = stride if index == 0 else 1
            downsample = None
            size_changes = block_stride != 1 or in_channels != out_channels
            if config.skip and size_changes:
                downsample = self._make_downsample(in_channels, out_channels, block_stride)
            blocks.append(block_class(in_channels, width, block_stride, downsample, config.skip, config.batch_norm))
            in_channels = out_channels
        return nn.Sequential(*blocks), out_channels

    def _make_downsample(self, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        if self.config.shortcut == "zero_pad":
            return ZeroPadShortcut(in_channels, out_channels, stride)
        conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not self.config.batch_norm)
        return nn.Sequential(conv, _norm(out_channels, self.config.batch_norm))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{index + 1}") for index in range(len(self.config.stage_blocks))]

    def blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """Yield ("layer2.3", block) for every residual block, input side first."""
        for stage_index, stage in enumerate(self.stages):
            for block_index, block in enumerate(stage):
                yield f"layer{stage_index + 1}.{block_index}", block

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, C, H/4, W/4) with the ImageNet stem
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)  # (B, C_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))  # (B, num_classes)


def initialise(model: ResNet, init: str) -> None:
    """Apply one of the lab's initialisations in place.

    - "he": kaiming normal, fan_out, as torchvision; BN γ=1, β=0.
    - "default": leave PyTorch's default init (kaiming uniform with a=√5, fan_in).
    - "zero_gamma": "he" plus γ=0 on the last BN of every residual branch (Goyal et al. 2017),
      so each block starts as the identity.
    - "fixup": "he", then (Zhang et al. 2019, Fixup) every branch conv except the last is scaled
      by L^(-1/(2m-2)) for L blocks of m convs, the last conv and fc start at zero, and each
      block gets a learnable scalar multiplier. NOTE: Fixup's scalar biases are not added.
    """
    if init == "default":
        return

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    blocks = [block for _, block in model.blocks()]
    if init == "zero_gamma":
        for block in blocks:
            if block.branch_out_bn is not None:
                nn.init.zeros_(block.branch_out_bn.weight)
    elif init == "fixup":
        scale = fixup_scale(model.config)
        for block in blocks:
            *inner, last = block.branch_convs
            for conv in inner:
                conv.weight.data.mul_(scale)
            nn.init.zeros_(last.weight)
            block.branch_scale = nn.Parameter(torch.ones(1))
        nn.init.zeros_(model.fc.weight)
        nn.init.zeros_(model.fc.bias)


def build_resnet(config: ResNetConfig, seed: int | None = None) -> ResNet:
    """Build the network for `config`; with a seed, the weights are reproducible."""
    if seed is None:
        return ResNet(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def feature_size(config: ResNetConfig) -> int:
    """Side of the last stage's feature map for the config's input size, with padding as built."""
    size = config.input_size
    if config.stem == "imagenet":
        size = (size + 2 * 3 - 7) // 2 + 1
        size = (size + 2 * 1 - 3) // 2 + 1
    for _ in config.stage_blocks[1:]:
        size = (size - 1) // 2 + 1
    return size


def fixup_scale(config: ResNetConfig) -> float:
    """Return the Fixup factor L^(-1/(2m-2)) for L blocks of m convolutions each."""
    convs_per_block = 3 if config.block == "bottleneck" else 2
    return math.pow(sum(config.stage_blocks), -1.0 / (2 * convs_per_block - 2))
