"""The degradation problem (He et al. 2016, Fig. 1 and §4.1), reproduced on the embedded digits.

Four networks train with identical settings, data order and seed: the plain and the residual
CIFAR network at a shallow and a deep depth. The deeper plain network ends with a higher
*training* loss than the shallower one, although it could represent it exactly (extra blocks
as identities); the deeper residual network does not. Every network trains through the
engine's `fit`, the lab's one training loop. Its step losses go to the run's metrics under the
series "plain-20", "residual-56", and so on.

Steps are numbered per network from 0 in the metrics, but each network logs at an offset
(network index × steps per network) so that a resumed run can discard exactly the rows of the
networks it trains again. `plan(config)` gives the offsets; pages subtract them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass

import torch

from core.data import DatasetSpec, default_preprocessing, fit_normalization, load_dataset
from core.engine import STOP_CANCELLED, STOP_NON_FINITE, EarlyStopping, TrainOptions, evaluate, fit, prepare_data
from core.errors import LabError
from core.groups import default_groups
from core.models import build_resnet, cifar_config
from core.schedule import GroupSchedule, Schedule

logger = logging.getLogger(__name__)

RESULT_FILE = "degradation.json"
VARIANTS = ("plain", "residual")
PRESETS = ("quick", "full")
MAX_EPOCHS = 200


@dataclass(frozen=True)
class DegradationConfig:
    """One comparison; saved with the run. Defaults are the quick preset."""

    depths: tuple[int, int] = (20, 56)  # shallow, deep (CIFAR family: 6n+2)
    epochs: int = 4  # passes over the training split, per network
    batch_size: int = 32
    # SGD peak LR (momentum 0.9, cosine to 0): He et al.'s 0.1 at batch 128, scaled to batch 32
    # by the linear scaling rule (Goyal et al. 2017) and rounded down.
    lr_max: float = 0.02
    warmup_steps: int = 20  # linear warmup from lr_max/10 (He et al. warm ResNet-110 up at 0.01)
    weight_decay: float = 1e-4  # as He et al. 2016 on CIFAR
    input_size: int = 8  # the digits' own 8×8 resolution; larger sides upscale them
    base_width: int = 16  # channels of layer1 (16 in He et al.'s CIFAR networks)
    max_per_class: int | None = None  # cap of digits per class, for the smallest runs
    seed: int = 0  # weights, data order and split: identical for all four networks
    preset: str = "quick"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["depths"] = list(self.depths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DegradationConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabError("grad.err_unknown_fields", fields=", ".join(unknown))
        values = dict(data)
        if "depths" in values:
            values["depths"] = tuple(int(d) for d in values["depths"])
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if len(self.depths) != 2 or not self.depths[0] < self.depths[1]:
            raise LabError("grad.err_depths", value=", ".join(str(d) for d in self.depths))
        for depth in self.depths:
            cifar_config(depth)  # raises errors.cifar_depth for a depth that is not 6n+2
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise LabError("grad.err_epochs", value=self.epochs, high=MAX_EPOCHS)
        if not (math.isfinite(self.lr_max) and self.lr_max > 0):
            raise LabError("grad.err_lr", value=self.lr_max)


def preset_config(preset: str) -> DegradationConfig:
    """"quick": digits at their own 8×8, 20 vs 56 layers, 4 epochs: about 80 CPU-seconds in all.
    "full": digits upscaled to 32×32 (the CIFAR size), 20 vs 56 layers, 30 epochs at He et al.'s
    batch 128 and LR 0.1; meant for a GPU.

    NOTE: the quick preset's ordering was measured on a CPU (see docs/ARCHITECTURE.md); the full
    preset has not been run on a GPU yet.
    """
    if preset == "quick":
        return DegradationConfig()
    if preset == "full":
        return DegradationConfig(epochs=30, batch_size=128, lr_max=0.1, warmup_steps=50, input_size=32,
                                 preset="full")
    raise LabError("errors.bad_choice", field="preset", value=preset, allowed=", ".join(PRESETS))


def series_name(variant: str, depth: int) -> str:
    return f"{variant}-{depth}"


@dataclass(frozen=True)
class PlannedNetwork:
    series: str  # metric series of its training steps; validation goes to f"{series}/val"
    variant: str  # "plain" or "residual"
    depth: int
    step_offset: int  # add to the network's own step to get the logged step


def steps_per_epoch(config: DegradationConfig, train_count: int) -> int:
    return train_count // config.batch_size


def plan(config: DegradationConfig, train_count: int) -> list[PlannedNetwork]:
    """Return the four networks in training order: plain shallow, plain deep, residual shallow, residual deep."""
    per_network = steps_per_epoch(config, train_count) * config.epochs
    order = [(variant, depth) for variant in VARIANTS for depth in config.depths]
    return [PlannedNetwork(series_name(variant, depth), variant, depth, index * per_network)
            for index, (variant, depth) in enumerate(order)]


class _NetworkContext:
    """Job context given to one network's `fit`: steps shifted, progress summed over networks.

    It also keeps the step losses of the training series by epoch, for the final summary.
    """

    def __init__(self, ctx, offset: int, total: int, series: str) -> None:
        self.ctx, self.offset, self.total, self.series = ctx, offset, total, series
        self.losses_by_epoch: dict[int, list[float]] = {}

    def log_metrics(self, step: int, metrics: dict[str, float], series: str = "train") -> None:
        if series == self.series and "loss" in metrics:
            self.losses_by_epoch.setdefault(int(metrics.get("epoch", 0)), []).append(metrics["loss"])
        self.ctx.log_metrics(step + self.offset, metrics, series)

    def last_epoch_loss(self) -> float | None:
        if not self.losses_by_epoch:
            return None
        losses = self.losses_by_epoch[max(self.losses_by_epoch)]
        return sum(losses) / len(losses)

    def set_progress(self, done: int, total: int) -> None:
        self.ctx.set_progress(self.offset + done, self.total)

    def should_stop(self) -> bool:
        return self.ctx.should_stop()


def _schedule(config: DegradationConfig, group_names: list[str], steps: int) -> Schedule:
    return Schedule(
        groups=tuple(GroupSchedule(name=name) for name in group_names),
        epochs=config.epochs,
        steps_per_epoch=steps,
        optimizer="sgd",
        lr_max=config.lr_max,
        lr_min=0.0,
        warmup_steps=min(config.warmup_steps, steps * config.epochs - 1),
        momentum=0.9,
        weight_decay=config.weight_decay,
    )


def _data_config(config: DegradationConfig) -> tuple[dict, int]:
    """Return the engine's data config (digits, normalisation fitted on the training split) and the training count."""
    spec = DatasetSpec(source="digits", seed=config.seed, max_per_class=config.max_per_class)
    loaded = load_dataset(spec)
    preprocessing = fit_normalization(loaded.train, default_preprocessing("digits").replace(input_size=config.input_size))
    return {"data": spec.to_dict(), "preprocessing": preprocessing.to_dict()}, len(loaded.train)


def train_network(network: PlannedNetwork, config: DegradationConfig, data, device: torch.device,
                  ctx, total_steps: int) -> dict:
    """Train one network through the engine's `fit`; return its final numbers."""
    architecture = cifar_config(network.depth, skip=network.variant == "residual", num_classes=len(data.classes),
                                input_size=config.input_size, base_width=config.base_width)
    model = build_resnet(architecture, seed=config.seed).to(device)
    schedule = _schedule(config, list(default_groups(model)), len(data.train))
    options = TrainOptions(batch_size=config.batch_size, seed=config.seed, restore_best=False,
                           early_stopping=EarlyStopping(patience=None), log_every_steps=5)

    network_ctx = _NetworkContext(ctx, network.step_offset, total_steps, network.series)
    result = fit(model, schedule, data.train, data.val, device, options, ctx=network_ctx,
                 series=network.series, val_series=f"{network.series}/val")
    if result.stop_reason in (STOP_CANCELLED, STOP_NON_FINITE):
        return {"series": network.series, "stop_reason": result.stop_reason}

    data.train.set_epoch(0)
    final_train = evaluate(model, data.train, device, options.amp, options.channels_last)
    final_val = evaluate(model, data.val, device, options.amp, options.channels_last)
    return {
        "series": network.series,
        "variant": network.variant,
        "depth": network.depth,
        "stop_reason": result.stop_reason,
        "train_loss": final_train.loss,  # whole training split, eval mode, after the last step
        "last_epoch_loss": network_ctx.last_epoch_loss(),  # mean step loss of the last epoch, train mode
        "train_acc": final_train.acc,
        "val_loss": final_val.loss,
        "val_acc": final_val.acc,
    }


def run_job(config: dict, ctx) -> None:
    """Run the "degradation" job of core.jobs: train the four networks, keeping degradation.json current.

    The file contains the config, the plan (series and step offsets, written before training so
    the page can draw curves at once) and each finished network's numbers.
    """
    settings = DegradationConfig.from_dict(config)
    data_config, train_count = _data_config(settings)
    options = TrainOptions(batch_size=settings.batch_size, seed=settings.seed)
    data = prepare_data(data_config, options, ctx.device)
    networks = plan(settings, train_count)
    total_steps = networks[-1].step_offset + len(data.train) * settings.epochs

    previous = _load_previous(ctx) if getattr(ctx, "resuming", False) else {}
    results = {name: entry for name, entry in previous.items() if entry.get("stop_reason") == "completed"}
    summary = {"config": settings.to_dict(), "plan": [dataclasses.asdict(network) for network in networks],
               "networks": results}
    ctx.save_json(RESULT_FILE, summary)

    for network in networks:
        if network.series in results:
            continue
        if hasattr(ctx, "discard_metrics_after"):
            ctx.discard_metrics_after(network.step_offset - 1)  # rows of an interrupted attempt
        logger.info("run %s: training %s", getattr(ctx, "run_id", "-"), network.series)
        results[network.series] = train_network(network, settings, data, ctx.device, ctx, total_steps)
        ctx.save_json(RESULT_FILE, summary)
        if results[network.series]["stop_reason"] == STOP_NON_FINITE:
            raise LabError("grad.err_degradation_nonfinite", network=network.series, lr=settings.lr_max)
        if ctx.should_stop():
            return
    ctx.set_progress(total_steps, total_steps)


def _load_previous(ctx) -> dict:
    path = ctx.run_dir / RESULT_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("networks", {})


# The deeper residual network counts as not degrading when its gap to the shallower one is at
# most this fraction of the plain networks' gap. On a small set trained briefly, the deeper
# residual network often ends a little behind, yet nothing like the deeper plain one.
RESIDUAL_GAP_FRACTION = 0.1


def degradation_facts(results: dict[str, dict], depths: tuple[int, int]) -> dict[str, str]:
    """Read the demo's facts from the final training losses of finished networks.

    "plain_degrades": "yes" when the deeper plain network ends with the higher loss.
    "residual_beats_plain": "yes" when, at the deeper depth, residual ends below plain.
    "residual_no_degradation": "better" (deeper residual ends lower), "close" (higher by at most
    RESIDUAL_GAP_FRACTION of the plain gap) or "no".
    A fact is missing while one of its networks has not finished.
    """
    shallow, deep = depths
    loss = {name: entry["train_loss"] for name, entry in results.items() if "train_loss" in entry}
    plain_shallow, plain_deep = loss.get(series_name("plain", shallow)), loss.get(series_name("plain", deep))
    residual_shallow, residual_deep = loss.get(series_name("residual", shallow)), loss.get(series_name("residual", deep))

    facts = {}
    if plain_shallow is not None and plain_deep is not None:
        facts["plain_degrades"] = "yes" if plain_deep > plain_shallow else "no"
    if plain_deep is not None and residual_deep is not None:
        facts["residual_beats_plain"] = "yes" if residual_deep < plain_deep else "no"
    if None not in (plain_shallow, plain_deep, residual_shallow, residual_deep):
        residual_gap, plain_gap = residual_deep - residual_shallow, plain_deep - plain_shallow
        if residual_gap <= 0:
            facts["residual_no_degradation"] = "better"
        elif residual_gap <= RESIDUAL_GAP_FRACTION * plain_gap:
            facts["residual_no_degradation"] = "close"
        else:
            facts["residual_no_degradation"] = "no"
    return facts
