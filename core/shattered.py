"""Shattered gradients (Balduzzi et al. 2017): how input gradients decorrelate along a line of inputs.

For a ReLU network with its BatchNorm statistics frozen, f(x) is piecewise linear, so the
gradient ∂f/∂x changes only where some ReLU flips. Along the segment between two images, a deep
plain network flips so many units that the gradients at neighbouring points are almost
unrelated, like white noise. A residual network of the same depth keeps them correlated:
Balduzzi et al. 2017 describe its gradients as brown noise.

We report, for the residual network and its plain twin:
- the derivative of the output along the segment, df/dt, at every point: the 1-D picture
  Balduzzi et al. plot for networks with a scalar input;
- the mean Pearson correlation between the input gradients of points `lag` steps apart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from core.gradients import ProbeSettings, probe_batches, twin_configs
from core.models import ResNetConfig, build_resnet, validate

logger = logging.getLogger(__name__)

DEFAULT_POINTS = 256
CHUNK = 64  # points per forward/backward, to bound memory on large inputs


@dataclass
class ShatteredResult:
    """Input-gradient structure along one segment for one network."""

    t: list[float]  # positions along the segment, 0 = first image, 1 = second image
    directional_derivative: list[float]  # df/dt at each position
    lags: list[int]
    correlation: list[float]  # mean correlation of gradients `lag` points apart

    @property
    def neighbour_correlation(self) -> float:
        return self.correlation[0]

    def to_dict(self) -> dict:
        return asdict(self)


def freeze_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of `images`, then switch to eval mode.

    With frozen statistics each input's output depends on that input alone, so one backward
    over a batch gives every point's own gradient.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def line_gradients(model: nn.Module, start: torch.Tensor, end: torch.Tensor, output_index: int,
                   num_points: int = DEFAULT_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of logit `output_index` at `num_points` inputs on the segment start → end.

    Returns (t, gradients) with shapes (N,) and (N, C·H·W). The model must be in eval mode.
    """
    t = torch.linspace(0.0, 1.0, num_points)
    gradients = []
    for chunk in t.split(CHUNK):
        points = (start + chunk[:, None, None, None] * (end - start)).requires_grad_(True)  # (n, C, H, W)
        logits = model(points)
        (grad,) = torch.autograd.grad(logits[:, output_index].sum(), points)
        gradients.append(grad.flatten(1))
    return t, torch.cat(gradients)


def lag_correlation(gradients: torch.Tensor, max_lag: int) -> list[float]:
    """Mean Pearson correlation between rows `lag` apart, for lag = 1 .. max_lag.

    Rows that are exactly constant (a gradient that underflowed to zero) have no correlation, so
    pairs involving them are skipped. A lag with no valid pair gives NaN.
    """
    rows = gradients.double()
    rows = rows / rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    centred = rows - rows.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)  # (N, 1)
    valid = norms.squeeze(1) > 0
    unit = centred / norms.clamp_min(torch.finfo(torch.float64).tiny)

    correlations = []
    for lag in range(1, max_lag + 1):
        pair_valid = valid[:-lag] & valid[lag:]
        products = (unit[:-lag] * unit[lag:]).sum(dim=1)
        correlations.append(products[pair_valid].mean().item() if pair_valid.any() else float("nan"))
    return correlations


def shattered(config: ResNetConfig, settings: ProbeSettings, num_points: int = DEFAULT_POINTS,
              max_lag: int = 32) -> dict[str, ShatteredResult]:
    """Compare the residual network and its plain twin on the same segment, seed and statistics.

    The segment joins the first two images of the probe batch. The output is the logit of the
    first image's class, and BatchNorm statistics are those of the probe batch.
    """
    validate(config)
    settings.validate()
    images, labels = probe_batches(replace(settings, steps=0), config)[0]
    start, end = images[0], images[1]
    output_index = int(labels[0])
    max_lag = min(max_lag, num_points - 1)

    results = {}
    for variant, variant_config in twin_configs(config).items():
        model = build_resnet(variant_config, seed=settings.seed)
        freeze_batch_norm(model, images)
        t, gradients = line_gradients(model, start, end, output_index, num_points)
        derivative = gradients @ (end - start).flatten()  # (N,) df/dt by the chain rule
        results[variant] = ShatteredResult(
            t=t.tolist(),
            directional_derivative=derivative.tolist(),
            lags=list(range(1, max_lag + 1)),
            correlation=lag_correlation(gradients, max_lag),
        )
        logger.info("shattered gradients of %s: neighbour correlation %.3f", variant,
                    results[variant].neighbour_correlation)
    return results
