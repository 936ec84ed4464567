"""Gradient-flow probe: what one backward pass sends to every weight of a ResNet or its plain twin.

One forward and one backward pass give the L2 norm of the gradient of every parameter tensor,
the same norms aggregated per block and per layer group (core.groups), and the standard
deviation of every block's output (forward hooks). There is no backward per layer, so a probe
costs about one training step. Running the probe on a few optimiser steps gives the layer × step
picture, which changes sharply after the first updates.

Every network in a comparison gets the same seed, the same batches and the same loss, so the
only differences are the ones the user toggled. A configuration whose loss, activations or
gradients stop being finite is reported as diverged, with the place where it happened, instead
of numbers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from core.data import (DatasetSpec, Preprocessing, default_preprocessing, fit_normalization, load_dataset,
                       tensor_dataset)
from core.engine import TrainStep
from core.errors import LabError
from core.groups import default_groups, group_of, params_by_group
from core.models import ResNetConfig, build_resnet, fixup_scale, validate, weighted_depth

logger = logging.getLogger(__name__)

DATA_SOURCES = ("digits", "noise")
MAX_BATCH_SIZE = 256
MAX_STEPS = 50
STEM = "stem"  # name of the stem's output in the forward-signal series


@dataclass(frozen=True)
class ProbeSettings:
    """Probe settings of one comparison, identical for every network compared."""

    batch_size: int = 32  # images per probe batch
    data: str = "digits"  # "digits": embedded real images, upscaled; "noise": N(0, 1) pixels
    seed: int = 0  # seeds the weights of every network and the batches
    steps: int = 0  # optimiser steps probed after step 0 (the heatmap's columns are 0..steps)
    lr: float = 0.1  # SGD learning rate of those steps (He et al. 2016 start CIFAR at 0.1)
    momentum: float = 0.9  # SGD momentum, as He et al. 2016

    def validate(self) -> None:
        if self.data not in DATA_SOURCES:
            raise LabError("errors.bad_choice", field="data", value=self.data, allowed=", ".join(DATA_SOURCES))
        if not 2 <= self.batch_size <= MAX_BATCH_SIZE:
            raise LabError("grad.err_batch_size", value=self.batch_size, low=2, high=MAX_BATCH_SIZE)
        if not 0 <= self.steps <= MAX_STEPS:
            raise LabError("grad.err_steps", value=self.steps, high=MAX_STEPS)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LabError("grad.err_lr", value=self.lr)


@dataclass
class ProbeResult:
    """Gradient norms and forward signal of one network at one step.

    Dicts keep the model's order, input side first. When `diverged` is True the numbers
    are not meaningful, and `divergence` names where the first non-finite value appeared.
    """

    step: int
    loss: float
    param_grad_norm: dict[str, float]  # every parameter tensor, by name
    block_grad_norm: dict[str, float]  # "layer2.3": norm over all parameters of the block
    group_grad_norm: dict[str, float]  # "stem", "layer1", ..., "head"
    block_output_std: dict[str, float]  # "stem", then every block's output
    main_path: list[str]  # weight names of the weighted layers, input to output (weighted_depth)
    diverged: bool = False
    divergence: dict[str, str] | None = None  # {"where": "loss"|"forward"|"gradient", "at": name}

    @property
    def first_last_ratio(self) -> float | None:
        """‖∂L/∂W‖ of the first weighted layer over that of the last (stem conv over fc).

        Both layers have the same shape at every depth of a family, so the ratio isolates
        what depth does. None when the last layer's gradient is exactly zero.
        """
        first = self.param_grad_norm[self.main_path[0]]
        last = self.param_grad_norm[self.main_path[-1]]
        if self.diverged or last == 0.0:
            return None
        return first / last

    def main_path_norms(self) -> list[float]:
        return [self.param_grad_norm[name] for name in self.main_path]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["first_last_ratio"] = self.first_last_ratio
        return data


@dataclass
class _Layout:
    """Position of every parameter of a model: its block, its layer group, the main path."""

    block_of: dict[str, str | None] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)
    main_path: list[str] = field(default_factory=list)


def _layout(model: nn.Module) -> _Layout:
    layout = _Layout()
    groups = default_groups(model)
    block_names = [name for name, _ in model.blocks()]
    for name, _ in model.named_parameters():
        layout.group_of[name] = group_of(name, groups)
        layout.block_of[name] = next((block for block in block_names if name.startswith(block + ".")), None)

    module_names = {id(module): name for name, module in model.named_modules()}
    layout.main_path.append("conv1.weight")
    for _, block in model.blocks():
        layout.main_path.extend(f"{module_names[id(conv)]}.weight" for conv in block.branch_convs)
    layout.main_path.append("fc.weight")
    return layout


def _register_output_hooks(model: nn.Module, outputs: dict[str, torch.Tensor]) -> list:
    """Keep the stem's and every block's output of the forward pass (autograd keeps them anyway)."""

    def record(name: str):
        def hook(_module, _inputs, output):
            outputs[name] = output.detach()

        return hook

    def record_stem(_module, inputs):
        outputs[STEM] = inputs[0].detach()

    handles = [model.stages[0].register_forward_pre_hook(record_stem)]
    handles += [block.register_forward_hook(record(name)) for name, block in model.blocks()]
    return handles


def _output_stds(outputs: dict[str, torch.Tensor], sums: list[float], norms: list[float]) -> dict[str, float]:
    """Std of each output from its sum and L2 norm: var = (‖x‖² − (Σx)²/n) / (n − 1).

    Two reductions are several times cheaper than `torch.std` on the CPU. The float32 sums carry
    a relative error of about 1e-7 × (mean/std)², negligible for activations after a ReLU.
    When ‖x‖² overflows float32 while the values are finite, the std is computed exactly.
    """
    stds = {}
    for (name, output), total, norm in zip(outputs.items(), sums, norms):
        count = output.numel()
        if math.isinf(norm) and math.isfinite(total):
            stds[name] = output.double().std().item()
            continue
        variance = (norm * norm - total * total / count) / max(count - 1, 1)
        stds[name] = math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan
    return stds


def _aggregate(norms: dict[str, float], key_of: dict[str, str | None]) -> dict[str, float]:
    """L2 norm over the concatenation of each key's gradients: sqrt of the sum of squares."""
    squares: dict[str, float] = {}
    for name, norm in norms.items():
        key = key_of[name]
        if key is not None:
            squares[key] = squares.get(key, 0.0) + norm * norm
    return {key: math.sqrt(total) for key, total in squares.items()}


def _first_non_finite(values: dict[str, float]) -> str | None:
    return next((name for name, value in values.items() if not math.isfinite(value)), None)


def _measure(model: nn.Module, layout: _Layout, loss: torch.Tensor, outputs: dict[str, torch.Tensor],
             step: int) -> ProbeResult:
    """Read the gradients left in `.grad` and the recorded outputs, with one device→host transfer."""
    names = [name for name, _ in model.named_parameters()]
    grads = [p.grad for _, p in model.named_parameters()]
    present = [grad for grad in grads if grad is not None]
    flats = [output.reshape(-1) for output in outputs.values()]
    values = torch.cat([
        loss.detach().float().view(1),
        torch.stack([torch.linalg.vector_norm(grad, dtype=torch.float32) for grad in present])
        if present else loss.new_zeros(0),
        torch.stack([flat.sum(dtype=torch.float32) for flat in flats]),
        torch.stack([torch.linalg.vector_norm(flat, dtype=torch.float32) for flat in flats]),
    ]).tolist()

    loss_value = values[0]
    grad_norms = iter(values[1:1 + len(present)])
    sums = values[1 + len(present):1 + len(present) + len(flats)]
    output_norms = values[1 + len(present) + len(flats):]
    # A parameter the loss does not reach has no .grad: its gradient is exactly zero.
    param_grad_norm = {name: next(grad_norms) if grad is not None else 0.0 for name, grad in zip(names, grads)}

    result = ProbeResult(
        step=step,
        loss=loss_value,
        param_grad_norm=param_grad_norm,
        block_grad_norm=_aggregate(param_grad_norm, layout.block_of),
        group_grad_norm=_aggregate(param_grad_norm, layout.group_of),
        block_output_std=_output_stds(outputs, sums, output_norms),
        main_path=list(layout.main_path),
    )
    _mark_divergence(result)
    return result


def probe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> ProbeResult:
    """Measure one forward and one backward pass of cross-entropy on (images, labels).

    The model runs in training mode, so BatchNorm uses the batch statistics, as in the first
    training step. The gradients stay in `.grad` (set, not accumulated).
    """
    layout = _layout(model)
    model.train()
    model.zero_grad(set_to_none=True)
    outputs: dict[str, torch.Tensor] = {}
    handles = _register_output_hooks(model, outputs)
    try:
        logits = model(images)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return _measure(model, layout, loss, outputs, step=0)


def _mark_divergence(result: ProbeResult) -> None:
    """Name the first non-finite value, looking forward first since it causes the rest."""
    bad_block = _first_non_finite(result.block_output_std)
    if bad_block is not None:
        result.divergence = {"where": "forward", "at": bad_block}
    elif not math.isfinite(result.loss):
        result.divergence = {"where": "loss", "at": "loss"}
    else:
        bad_param = _first_non_finite(result.param_grad_norm)
        if bad_param is not None:
            result.divergence = {"where": "gradient", "at": bad_param}
    result.diverged = result.divergence is not None


def probe_steps(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                settings: ProbeSettings, device: torch.device | None = None) -> list[ProbeResult]:
    """Probe at step 0, then after each of `settings.steps` SGD steps; stop at divergence.

    Each step is the engine's `TrainStep` (float32, no clipping), with the forward hooks on:
    the gradients it leaves in `.grad` are the ones the optimiser stepped on, so measuring
    costs no extra pass. The probe after the last step also steps the optimiser; those
    weights are discarded.
    """
    device = device or torch.device("cpu")
    model.to(device)
    layout = _layout(model)
    groups_params = params_by_group(model, default_groups(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    train_step = TrainStep(model, optimizer, groups_params, device, amp=False, channels_last=False)

    results: list[ProbeResult] = []
    outputs: dict[str, torch.Tensor] = {}
    handles = _register_output_hooks(model, outputs)
    model.train()
    try:
        for step, (images, labels) in enumerate(batches[: settings.steps + 1]):
            step_output = train_step(images, labels)
            result = _measure(model, layout, step_output.loss, outputs, step)
            outputs.clear()  # free the activations before the next forward pass
            results.append(result)
            if result.diverged:
                logger.info("probe diverged at step %d (%s at %s)", step, result.divergence["where"],
                            result.divergence["at"])
                break
    finally:
        for handle in handles:
            handle.remove()
    return results


def probe_batches(settings: ProbeSettings, config: ResNetConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return the `steps + 1` batches given to every compared network, drawn from `settings.seed` alone.

    Labels are digit classes 0-9, folded into `num_classes` when a custom head has fewer.
    """
    count = settings.batch_size * (settings.steps + 1)
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.data == "noise":
        shape = (count, config.in_channels, config.input_size, config.input_size)
        images = torch.randn(shape, generator=generator)  # (N, C, H, W)
        labels = torch.randint(0, 10, (count,), generator=generator)
    else:
        images, labels = digits_batch(count, config.input_size, config.in_channels, generator)
    labels = labels % config.num_classes

    return [(images[start:start + settings.batch_size], labels[start:start + settings.batch_size])
            for start in range(0, count, settings.batch_size)]


@lru_cache(maxsize=2)
def _digits_preprocessing(channels: int) -> Preprocessing:
    """Digits preprocessing with the training split's statistics, fitted once per process.

    Fitted at 32×32: the statistics of an upscaled digit hardly depend on the size.
    """
    loaded = load_dataset(DatasetSpec(source="digits"))
    preprocessing = default_preprocessing("digits")
    if channels == 1:
        preprocessing = preprocessing.replace(channels=1, mean=(0.5,), std=(0.5,))
    return fit_normalization(loaded.train, preprocessing)


def digits_batch(count: int, input_size: int, channels: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` training digits drawn by `generator`, preprocessed as a training run would.

    Only the drawn images are resized to `input_size`, so a probe at 224×224 does not
    preprocess the whole set.
    """
    loaded = load_dataset(DatasetSpec(source="digits"))
    preprocessing = _digits_preprocessing(channels).replace(input_size=input_size)
    order = torch.randperm(len(loaded.train), generator=generator)
    order = order.repeat(count // len(order) + 1)[:count]
    images, labels = tensor_dataset(loaded.train.subset(order.numpy()), preprocessing).tensors
    return images, labels  # (count, C, H, W), (count,)


def twin_configs(config: ResNetConfig) -> dict[str, ResNetConfig]:
    """Return the residual network and its plain twin, identical but for the skip connections."""
    return {"residual": config.replace(skip=True), "plain": config.replace(skip=False)}


def compare(config: ResNetConfig, settings: ProbeSettings,
            device: torch.device | None = None) -> dict[str, list[ProbeResult]]:
    """Probe the residual network and its plain twin with the same seed, batches and loss."""
    validate(config)
    settings.validate()
    batches = probe_batches(settings, config)
    results = {}
    for variant, variant_config in twin_configs(config).items():
        model = build_resnet(variant_config, seed=settings.seed)
        results[variant] = probe_steps(model, batches, settings, device)
        logger.info("probed %s %s over %d step(s)", variant, variant_config.to_dict(), len(results[variant]))
    return results


# --- findings: the measured numbers in words ---------------------------------------------------
# The page explains each chart with these findings. Each is a catalog key plus the measured values
# that fill it, so the text always describes the configuration on screen.

GROWS, VANISHES, STEADY = "grows", "vanishes", "steady"
RATIO_GROWS = 100.0  # first/last above this: the gradient grows toward the input
RATIO_VANISHES = 0.01  # below this: it vanishes toward the input
SIGNAL_EXPLODES = 10.0  # last block std over stem std
SIGNAL_DIES = 0.1
LOSS_EXPLODES = 10 * math.log(10)  # ten times the loss of a uniform guess over 10 classes


@dataclass(frozen=True)
class Finding:
    key: str  # catalog key, "grad.*"
    params: dict = field(default_factory=dict)


def _at_step(results: list[ProbeResult], step: int) -> ProbeResult:
    return results[min(step, len(results) - 1)]


def gradient_regime(result: ProbeResult) -> str:
    """"diverged", "zero_first" (no gradient reaches the first layer), "zero_last", or the ratio's trend."""
    if result.diverged:
        return "diverged"
    norms = result.main_path_norms()
    if norms[-1] == 0.0:
        return "zero_last"
    if norms[0] == 0.0:
        return "zero_first"
    ratio = norms[0] / norms[-1]
    if ratio > RATIO_GROWS:
        return GROWS
    if ratio < RATIO_VANISHES:
        return VANISHES
    return STEADY


def _diverged_finding(variant: str, result: ProbeResult) -> Finding:
    return Finding("grad.find_diverged", {"net": variant, "step": result.step, "where": result.divergence["where"],
                                          "at": result.divergence["at"]})


def layer_findings(config: ResNetConfig, results: dict[str, list[ProbeResult]], step: int = 0) -> list[Finding]:
    """Describe each network's first/last ratio at `step`, then add the literature's account."""
    findings = []
    for variant, steps in results.items():
        result = _at_step(steps, step)
        regime = gradient_regime(result)
        if regime == "diverged":
            findings.append(_diverged_finding(variant, result))
            continue
        norms = result.main_path_norms()
        params = {"net": variant, "first": norms[0], "last": norms[-1], "layers": len(norms)}
        if regime in (GROWS, VANISHES, STEADY):
            params["ratio"] = norms[0] / norms[-1]
        findings.append(Finding(f"grad.find_layers_{regime}", params))
        if result.loss > LOSS_EXPLODES:
            findings.append(Finding("grad.find_loss_explodes", {"net": variant, "loss": result.loss,
                                                                 "largest": max(norms)}))
    findings.append(_regime_note(config, results, step))
    return findings


def _ratio_or_nan(result: ProbeResult) -> float:
    ratio = result.first_last_ratio
    return float("nan") if ratio is None else ratio


def _regime_note(config: ResNetConfig, results: dict[str, list[ProbeResult]], step: int) -> Finding:
    """Return the literature's account of this configuration, filled with this run's numbers."""
    residual = _at_step(results["residual"], step)
    plain = _at_step(results["plain"], step)
    depth = weighted_depth(config)
    if config.init == "fixup":
        return Finding("grad.note_fixup", {"scale": fixup_scale(config), "depth": depth})
    if config.init == "zero_gamma" and config.batch_norm:
        zero, total = zero_gradient_branch_weights(residual)
        return Finding("grad.note_zero_gamma", {"zero": zero, "total": total, "step": residual.step})
    if config.batch_norm:
        return Finding("grad.note_bn", {"depth": depth, "plain": _ratio_or_nan(plain),
                                        "residual": _ratio_or_nan(residual)})
    if config.init == "default":
        return Finding("grad.note_default_init", {"depth": depth, "plain_first": plain.main_path_norms()[0],
                                                  "residual_first": residual.main_path_norms()[0]})
    key = "grad.note_he_no_bn_zero_gamma" if config.init == "zero_gamma" else "grad.note_he_no_bn"
    growth = _signal_growth(residual)
    return Finding(key, {"depth": depth, "growth": growth, "loss": residual.loss})


def zero_gradient_branch_weights(result: ProbeResult) -> tuple[int, int]:
    """(how many, out of how many) residual-branch conv weights got a gradient of exactly 0."""
    branch = result.main_path[1:-1]
    zero = sum(1 for name in branch if result.param_grad_norm[name] == 0.0)
    return zero, len(branch)


def _signal_growth(result: ProbeResult) -> float:
    stds = list(result.block_output_std.values())
    return stds[-1] / stds[0] if stds[0] > 0 else float("nan")


def _signal_trend(last_std: float, growth: float) -> str:
    if last_std == 0.0:
        return "dead"
    if growth > SIGNAL_EXPLODES:
        return "explodes"
    if growth < SIGNAL_DIES:
        return "dies"
    return "steady"


def signal_findings(config: ResNetConfig, results: dict[str, list[ProbeResult]], step: int = 0) -> list[Finding]:
    """Describe each network's forward signal from the stem to the last block."""
    findings = []
    for variant, steps in results.items():
        result = _at_step(steps, step)
        if result.diverged:
            findings.append(_diverged_finding(variant, result))
            continue
        stds = list(result.block_output_std.values())
        growth = _signal_growth(result)
        findings.append(Finding(f"grad.find_signal_{_signal_trend(stds[-1], growth)}",
                                {"net": variant, "first": stds[0], "last": stds[-1], "growth": growth}))
    key = "grad.note_signal_bn" if config.batch_norm else "grad.note_signal_no_bn"
    findings.append(Finding(key, {}))
    return findings


def step_findings(results: dict[str, list[ProbeResult]], settings: ProbeSettings) -> list[Finding]:
    """Describe how the first and last layers' gradients changed over the steps, or where a network diverged."""
    findings = []
    for variant, steps in results.items():
        last = steps[-1]
        if last.diverged:
            findings.append(Finding("grad.find_steps_diverged", {
                "net": variant, "step": last.step, "where": last.divergence["where"], "at": last.divergence["at"],
                "lr": settings.lr}))
            continue
        first_norms, last_norms = steps[0].main_path_norms(), last.main_path_norms()
        findings.append(Finding("grad.find_steps", {
            "net": variant, "steps": last.step, "first_start": first_norms[0], "first_end": last_norms[0],
            "last_start": first_norms[-1], "last_end": last_norms[-1]}))
    return findings
