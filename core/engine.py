"""The one training loop of the lab.

Every job that trains (a run from the Entrenamiento page, the degradation demo, the LR finder,
the command line, torchrun) goes through the same pieces:

- `TrainStep`: one optimizer step with switches, never duplicated branches: bf16 autocast and
  channels_last (CUDA only), gradient-norm per layer group, optional clipping of the global
  norm, then `optimizer.step()`. It returns device tensors and never synchronises.
- `fit(...)`: epochs of `TrainStep` driven by the Fine-tuning `Schedule` (per-step LRs,
  freezing, frozen BatchNorm in eval mode), with validation after each epoch and early
  stopping. The best weights are restored at the end whatever ended the run. Cancel is checked
  before every step, and a non-finite loss stops the run. Metrics leave the device once per
  `log_every_steps` (one transfer), yet every step gets its own row.
- `evaluate(...)` / `predict(...)`: validation loss and accuracy, and per-sample outputs for
  the confusion matrix and the highest-loss images.
- `run_job(config, ctx)`: the "train" job: data, model, weights, schedule from the run
  config, then `fit`, checkpoints and the after-run evaluation.

Metric names (the page and the CLI read these): train series "loss", "acc", "grad_norm",
"grad_norm/<group>", "lr/<group>", "images_per_s", "epoch"; val series "loss", "acc", "epoch".
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from core import checkpoints
from core.data import (DatasetSpec, ImageDataset, Preprocessing, Split, default_preprocessing, fit_normalization,
                       load_dataset, preload_bytes, tensor_dataset)
from core.errors import LabError
from core.groups import default_groups
from core.models import ResNetConfig, build_resnet, validate
from core.schedule import GroupSchedule, Schedule
from core.weights import load_weights_spec

logger = logging.getLogger(__name__)

MONITORS = ("val_loss", "val_acc")
# How often (seconds) fit() updates the stored progress; metrics have their own flush timer.
PROGRESS_EVERY_S = 0.5


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyStopping:
    monitor: str = "val_loss"  # "val_loss" (lower is better) or "val_acc" (higher is better)
    patience: int | None = 3  # epochs without improvement before stopping; None never stops early
    min_delta: float = 0.0  # a change smaller than this is not an improvement

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise LabError("train.err_monitor", monitor=self.monitor, allowed=", ".join(MONITORS))
        if self.patience is not None and self.patience < 1:
            raise LabError("train.err_patience", patience=self.patience)
        if not self.min_delta >= 0:
            raise LabError("train.err_min_delta", min_delta=self.min_delta)

    def is_improvement(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.monitor == "val_loss":
            return value < best - self.min_delta
        return value > best + self.min_delta


@dataclass(frozen=True)
class TrainOptions:
    """How to train, apart from the schedule (LRs, epochs) and the data; saved with every run."""

    batch_size: int = 64
    grad_clip_norm: float | None = None  # clip the global gradient norm to this; None = off
    amp: bool = True  # bf16 autocast on CUDA (no GradScaler needed for bf16); ignored on CPU
    channels_last: bool = True  # NHWC memory format on CUDA, faster convolutions; ignored on CPU
    log_every_steps: int = 10  # steps per device→host metrics transfer; every step still logged
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    restore_best: bool = True  # end with the best validated weights, whatever ended the run
    label_smoothing: float = 0.0
    seed: int = 0
    top_losses: int = 16  # validation images with the highest loss kept for the page

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 65536:
            raise LabError("train.err_batch_size", batch_size=self.batch_size)
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise LabError("train.err_grad_clip", value=self.grad_clip_norm)
        if self.log_every_steps < 1:
            raise LabError("train.err_log_every", value=self.log_every_steps)
        if not 0 <= self.label_smoothing < 1:
            raise LabError("train.err_label_smoothing", value=self.label_smoothing)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> TrainOptions:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LabError("train.err_unknown_options", fields=", ".join(unknown))
        if isinstance(data.get("early_stopping"), dict):
            stopping = data["early_stopping"]
            stopping_known = {f.name for f in dataclasses.fields(EarlyStopping)}
            if set(stopping) - stopping_known:
                raise LabError("train.err_unknown_options", fields=", ".join(sorted(set(stopping) - stopping_known)))
            data["early_stopping"] = EarlyStopping(**stopping)
        return cls(**data)


class Context(Protocol):
    """The reporting interface of fit(): a JobContext, the CLI's printer, or NullContext."""

    def log_metrics(self, step: int, metrics: dict[str, float], series: str = "train") -> None: ...
    def set_progress(self, done: int, total: int) -> None: ...
    def should_stop(self) -> bool: ...


class NullContext:
    """Records nothing and never stops: for tests, benchmarks and library use."""

    def log_metrics(self, step: int, metrics: dict[str, float], series: str = "train") -> None:
        pass

    def set_progress(self, done: int, total: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


# --- distributed helpers ---------------------------------------------------------------------


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself under a DistributedDataParallel wrapper (parameter names without "module.")."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if _distributed():
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
    return values


# --- the step ------------------------------------------------------------------------------------


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when `amp`, else a no-op context (CPU training stays float32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def uses_channels_last(device: torch.device, channels_last: bool) -> bool:
    return channels_last and device.type == "cuda"


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if uses_channels_last(device, channels_last) else torch.contiguous_format
    images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


@dataclass
class StepOutput:
    """Device tensors of one step; reading any of them synchronises, so fit() batches the reads."""

    loss: torch.Tensor  # () mean loss of the batch, float32
    correct: torch.Tensor  # () number of correct predictions
    batch_size: int
    grad_norms: torch.Tensor  # (G,) L2 norm of the gradient per group, before clipping; NaN = no grad
    grad_norm: torch.Tensor  # () global L2 norm before clipping


class TrainStep:
    """The one training-step path: forward, loss, backward, gradient norms, clipping, optimizer step.

    `groups_params` maps group names to parameter names of `unwrap(model)`. The gradient norm of
    every group is measured on each step because the page plots it. The global norm for
    clipping is computed from the same per-group norms, without a second pass over the gradients.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, groups_params: dict[str, list[str]],
                 device: torch.device, amp: bool = True, channels_last: bool = True,
                 grad_clip_norm: float | None = None, label_smoothing: float = 0.0) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.grad_clip_norm = grad_clip_norm
        self.label_smoothing = label_smoothing
        parameters = dict(unwrap(model).named_parameters())
        self.group_names = list(groups_params)
        self.group_parameters = [[parameters[name] for name in names] for names in groups_params.values()]
        self._no_grad_norm = torch.tensor(float("nan"), device=device)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # float() so the loss is float32 under bf16 autocast too.
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def _grad_norms(self) -> tuple[torch.Tensor, list[nn.Parameter]]:
        """(G,) norm per group, and the parameters that have a gradient this step."""
        norms, with_grad = [], []
        for parameters in self.group_parameters:
            learning = [p for p in parameters if p.grad is not None]
            with_grad.extend(learning)
            norms.append(torch.nn.utils.get_total_norm([p.grad for p in learning]) if learning else self._no_grad_norm)
        return torch.stack(norms), with_grad

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        images, labels = to_device(images, labels, self.device, self.channels_last)

        with autocast_for(self.device, self.amp):
            logits = self.model(images)  # (B, num_classes)
        loss = self.loss(logits, labels)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

        grad_norms, with_grad = self._grad_norms()
        grad_norm = torch.linalg.vector_norm(torch.nan_to_num(grad_norms, nan=0.0))
        if self.grad_clip_norm is not None and with_grad:
            torch.nn.utils.clip_grads_with_norm_(with_grad, self.grad_clip_norm, grad_norm)
        self.optimizer.step()

        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return StepOutput(loss.detach(), correct, int(labels.shape[0]), grad_norms, grad_norm)


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalResult:
    loss: float
    acc: float
    count: int


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device, amp: bool = True,
             channels_last: bool = True) -> EvalResult:
    """Mean cross-entropy and accuracy over `batches`, summed over all processes under DDP.

    Under DDP each process evaluates its own shard with the unwrapped model: a DDP forward
    would broadcast buffers, a collective that shards of unequal length would deadlock.
    """
    model = unwrap(model)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for images, labels in batches:
        images, labels = to_device(images, labels, device, channels_last)
        with autocast_for(device, amp):
            logits = model(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        totals[1] += (logits.argmax(dim=1) == labels).sum()
        totals[2] += labels.shape[0]
    model.train(was_training)

    loss_sum, correct, count = _all_reduce_sum(totals).tolist()
    if count == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    return EvalResult(loss_sum / count, correct / count, int(count))


@torch.inference_mode()
def predict(model: nn.Module, batches: Iterable, device: torch.device, amp: bool = True,
            channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) on the CPU, in the order of `batches`."""
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in batches:
        images, device_labels = to_device(images, labels, device, channels_last)
        with autocast_for(device, amp):
            all_logits.append(model(images).float().cpu())
        all_labels.append(device_labels.cpu())
    model.train(was_training)
    if not all_logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


# --- fit -------------------------------------------------------------------------------------------


@dataclass
class FitState:
    """Loop counters: what a checkpoint must hold to resume at an epoch boundary."""

    epoch: int = 0  # next epoch to run
    step: int = 0  # next optimizer step (global, across epochs)
    best_value: float | None = None  # best value of the monitored metric so far
    best_epoch: int | None = None
    epochs_without_improvement: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FitState:
        return cls(**data)


STOP_COMPLETED, STOP_EARLY, STOP_CANCELLED, STOP_NON_FINITE = "completed", "early_stopping", "cancelled", "non_finite"


@dataclass
class FitResult:
    state: FitState
    stop_reason: str  # one of STOP_*
    history: list[dict]  # per finished epoch: {"epoch", "step", "val_loss", "val_acc"}
    non_finite_step: int | None = None
    restored_best: bool = False
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the best weights


class _MetricRows:
    """Per-step device tensors waiting for one transfer, turned into one metrics row per step."""

    def __init__(self, group_names: list[str]) -> None:
        self.group_names = group_names
        self.pending: list[tuple[int, int, int, torch.Tensor, dict[str, float]]] = []
        self.images = 0
        self.started = time.perf_counter()

    def add(self, step: int, epoch: int, output: StepOutput, lrs: dict[str, float]) -> None:
        # One small device tensor per step: [loss, correct, global norm, norm per group]. The batch
        # size stays on the host: building a tensor from it would copy to the GPU and synchronise.
        packed = torch.cat([output.loss.view(1), output.correct.view(1).float(), output.grad_norm.view(1).float(),
                            output.grad_norms.float()])
        self.pending.append((step, epoch, output.batch_size, packed, lrs))
        self.images += output.batch_size

    def restart_clock(self) -> None:
        self.images = 0
        self.started = time.perf_counter()

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """Return all pending rows as (step, metrics), with one device→host transfer."""
        if not self.pending:
            return []
        values = torch.stack([packed for _, _, _, packed, _ in self.pending]).cpu().tolist()
        elapsed = time.perf_counter() - self.started
        rows = []
        for (step, epoch, batch_size, _, lrs), row in zip(self.pending, values):
            loss, correct, grad_norm, *group_norms = row
            metrics = {"loss": loss, "acc": correct / batch_size, "grad_norm": grad_norm, "epoch": epoch}
            for name, norm in zip(self.group_names, group_norms):
                if not math.isnan(norm):
                    metrics[f"grad_norm/{name}"] = norm
            for name, lr in lrs.items():
                metrics[f"lr/{name}"] = lr
            rows.append((step, metrics))
        if elapsed > 0:
            rows[-1][1]["images_per_s"] = self.images / elapsed
        self.pending = []
        self.restart_clock()
        return rows


def _group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Return the LR of each named group (a group split in two for weight decay has one LR)."""
    return {group.get("name", str(index)): group["lr"] for index, group in enumerate(optimizer.param_groups)}


def _any_non_finite(rows: list[tuple[int, dict[str, float]]], device: torch.device) -> int | None:
    """Step of the first non-finite loss in `rows` (agreed across processes under DDP), or None."""
    first = next((step for step, metrics in rows if not math.isfinite(metrics["loss"])), None)
    if _distributed():
        flag = torch.tensor([0 if first is None else 1], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and first is None:
            first = rows[-1][0] if rows else -1
    return first


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in unwrap(model).state_dict().items()}


class Batches(Protocol):
    """An epoch's batches: iterable, sized, reshuffled by set_epoch (see EpochBatches)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


def fit(model: nn.Module, schedule, train_batches: Batches, val_batches: Iterable, device: torch.device,
        options: TrainOptions = TrainOptions(), *, ctx: Context | None = None,
        groups_params: dict[str, list[str]] | None = None, optimizer: torch.optim.Optimizer | None = None,
        state: FitState | None = None, best_state: dict[str, torch.Tensor] | None = None,
        on_epoch_end: Callable[[FitState, bool], None] | None = None,
        series: str = "train", val_series: str = "val") -> FitResult:
    """Train `model` (already on `device`, maybe DDP-wrapped) through `schedule`; see the module docstring.

    `schedule.steps_per_epoch` must equal `len(train_batches)`. `state`/`best_state`/`optimizer`
    continue an interrupted run. `on_epoch_end(state, improved)` runs after each validated epoch
    with finite metrics (where run_job writes checkpoints). Returns why the loop ended. The model
    ends with the best weights when `options.restore_best` is on and an epoch was validated.
    """
    ctx = ctx or NullContext()
    core_model = unwrap(model)
    groups_params = groups_params or schedule.group_params(core_model)
    optimizer = optimizer or schedule.build_optimizer(core_model, groups_params)
    state = state or FitState()
    if len(train_batches) != schedule.steps_per_epoch:
        raise LabError("train.err_steps_mismatch", loader=len(train_batches), schedule=schedule.steps_per_epoch)

    step_fn = TrainStep(model, optimizer, groups_params, device, amp=options.amp,
                        channels_last=options.channels_last, grad_clip_norm=options.grad_clip_norm,
                        label_smoothing=options.label_smoothing)
    stopping = options.early_stopping
    rows = _MetricRows(list(groups_params))
    history: list[dict] = []
    stop_reason, non_finite_step = STOP_COMPLETED, None
    last_progress = 0.0
    ctx.set_progress(state.step, schedule.total_steps)

    while state.epoch < schedule.epochs and stop_reason == STOP_COMPLETED:
        model.train()
        train_batches.set_epoch(state.epoch)
        rows.restart_clock()

        for images, labels in train_batches:
            if ctx.should_stop():
                stop_reason = STOP_CANCELLED
                break
            schedule.apply(state.step, core_model, optimizer, groups_params)
            rows.add(state.step, state.epoch, step_fn(images, labels), _group_lrs(optimizer))
            state.step += 1

            if len(rows.pending) >= options.log_every_steps:
                non_finite_step = _log_rows(ctx, rows.drain(), series, device)
                if non_finite_step is not None:
                    stop_reason = STOP_NON_FINITE
                    break
            if time.monotonic() - last_progress > PROGRESS_EVERY_S:
                ctx.set_progress(state.step, schedule.total_steps)
                last_progress = time.monotonic()

        if stop_reason in (STOP_COMPLETED, STOP_CANCELLED):
            # The rest of the interval, also after a cancel, so the page shows every step taken.
            non_finite_step = _log_rows(ctx, rows.drain(), series, device)
            if non_finite_step is not None:
                stop_reason = STOP_NON_FINITE
        if stop_reason != STOP_COMPLETED:
            break

        result = evaluate(model, val_batches, device, options.amp, options.channels_last)
        if result.count and not math.isfinite(result.loss):
            stop_reason, non_finite_step = STOP_NON_FINITE, state.step - 1
            break
        if result.count:
            ctx.log_metrics(state.step - 1, {"loss": result.loss, "acc": result.acc, "epoch": state.epoch},
                            val_series)
            history.append({"epoch": state.epoch, "step": state.step - 1, "val_loss": result.loss,
                            "val_acc": result.acc})
        else:
            logger.warning("epoch %d: the validation set is empty; early stopping and best weights are off",
                           state.epoch)

        value = result.loss if stopping.monitor == "val_loss" else result.acc
        improved = bool(result.count) and stopping.is_improvement(value, state.best_value)
        if improved:
            state.best_value, state.best_epoch = value, state.epoch
            state.epochs_without_improvement = 0
            best_state = _cpu_state(model)
        elif result.count:
            state.epochs_without_improvement += 1
        state.epoch += 1
        if on_epoch_end is not None:
            on_epoch_end(state, improved)
        ctx.set_progress(state.step, schedule.total_steps)
        logger.info("epoch %d: val loss %.4f, val acc %.4f%s", state.epoch - 1, result.loss, result.acc,
                    " (best)" if improved else "")

        if stopping.patience is not None and state.epochs_without_improvement >= stopping.patience:
            stop_reason = STOP_EARLY

    restored = False
    if best_state is not None and (options.restore_best or stop_reason == STOP_NON_FINITE):
        # After a non-finite loss the current weights are unusable, whatever the option is.
        core_model.load_state_dict(best_state)
        restored = True
    ctx.set_progress(state.step, schedule.total_steps)
    return FitResult(state, stop_reason, history, non_finite_step, restored, best_state)


def _log_rows(ctx: Context, rows: list[tuple[int, dict[str, float]]], series: str,
              device: torch.device) -> int | None:
    """Log finite rows up to the first non-finite loss; return that step, or None."""
    first_bad = _any_non_finite(rows, device)
    for step, metrics in rows:
        if first_bad is not None and step >= first_bad:
            break
        ctx.log_metrics(step, metrics, series)
    return first_bad


# --- batches ---------------------------------------------------------------------------------------


class EpochBatches:
    """Batches of a dataset, reshuffled per epoch from a seed; the `Batches` the loop consumes.

    A `TensorDataset` (data preprocessed once into memory) is sliced directly, which costs
    nothing per step. Any other map-style dataset goes through a DataLoader with these index
    batches. Under DDP each process takes its own slice of every epoch's permutation. With
    `drop_last=True` (training) every process gets the same number of full batches, as DDP
    requires.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.tensors = dataset.tensors if isinstance(dataset, torch.utils.data.TensorDataset) else None
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        count = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.arange(count)
        if self.drop_last:
            order = order[: count // self.world_size * self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        count = len(self.dataset)
        if self.drop_last:
            return count // self.world_size // self.batch_size
        return math.ceil(max(0, math.ceil((count - self.rank) / self.world_size)) / self.batch_size)

    def index_batches(self) -> list[torch.Tensor]:
        indices = self._indices()
        return [indices[start : start + self.batch_size] for start in range(0, len(self) * self.batch_size, self.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.index_batches()
        if self.tensors is not None:
            images, labels = self.tensors
            for batch in batches:
                yield images[batch], labels[batch]
            return
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches],
                                             num_workers=self.num_workers, pin_memory=self.pin_memory)
        yield from loader


# --- the "train" job ---------------------------------------------------------------------------

# Datasets whose float32 inputs fit in this many bytes are preprocessed once into memory;
# larger ones are decoded per batch.
PRELOAD_LIMIT_BYTES = 2 << 30
DEFAULT_EPOCHS = 5
DEFAULT_LR_MAX = 1e-3  # AdamW from scratch: a safe default for these small networks


def default_schedule(group_names: list[str], steps_per_epoch: int, epochs: int = DEFAULT_EPOCHS):
    """Build the schedule of a run started without one: every group trains from step 0, cosine from lr_max."""
    return Schedule(groups=tuple(GroupSchedule(name=name) for name in group_names), epochs=epochs,
                    steps_per_epoch=steps_per_epoch, optimizer="adamw", lr_max=DEFAULT_LR_MAX)


@dataclass
class PreparedData:
    classes: list[str]  # index = model output; stored with the run
    preprocessing: Preprocessing
    train: EpochBatches
    val: EpochBatches  # this process's share of the validation set
    val_all: EpochBatches  # the whole validation set, for the after-run evaluation
    val_split: Split  # gives the images shown after the run
    summary: dict  # LoadedDataset.summary(): class mapping, counts, skipped files


def prepare_data(config: dict, options: TrainOptions, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> PreparedData:
    """Load the run's dataset and preprocessing into per-epoch batches.

    Without an explicit preprocessing the source's default is used; with no pretrained weights
    its mean/std are then measured on the training split (never on validation).
    """
    spec = DatasetSpec.from_dict(config.get("data") or {})
    loaded = load_dataset(spec)
    if config.get("preprocessing"):
        preprocessing = Preprocessing.from_dict(config["preprocessing"])
    else:
        weights_kind = (config.get("weights") or {}).get("kind", "none")
        preprocessing = default_preprocessing(spec.source, pretrained=weights_kind == "imagenet")
        if weights_kind == "none":
            preprocessing = fit_normalization(loaded.train, preprocessing, seed=spec.seed)

    in_memory = preload_bytes(loaded.train, preprocessing) + preload_bytes(loaded.val, preprocessing)
    make_dataset = tensor_dataset if in_memory <= PRELOAD_LIMIT_BYTES else ImageDataset
    train_set, val_set = make_dataset(loaded.train, preprocessing), make_dataset(loaded.val, preprocessing)
    pin = device.type == "cuda"

    train = EpochBatches(train_set, options.batch_size, shuffle=True, seed=options.seed, drop_last=True,
                         rank=rank, world_size=world_size, pin_memory=pin)
    if len(train) == 0:
        raise LabError("train.err_too_few_batches", count=len(loaded.train), batch_size=options.batch_size)
    val = EpochBatches(val_set, options.batch_size, shuffle=False, rank=rank, world_size=world_size, pin_memory=pin)
    val_all = EpochBatches(val_set, options.batch_size, shuffle=False, pin_memory=pin)
    return PreparedData(list(loaded.classes), preprocessing, train, val, val_all, loaded.val, loaded.summary())


def build_model(config: dict, data: PreparedData, options: TrainOptions):
    """Build the run's network sized for the data (classes, channels, input side) and load its initial weights."""
    preprocessing = data.preprocessing
    architecture = ResNetConfig.from_dict(config["architecture"]).replace(
        num_classes=len(data.classes), in_channels=preprocessing.channels, input_size=preprocessing.input_size)
    validate(architecture)
    model = build_resnet(architecture, seed=options.seed)
    weights = config.get("weights") or {"kind": "none"}
    report = load_weights_spec(weights, model, allow_download=bool(weights.get("allow_download", False)))
    return architecture, model, report


def run_job(config: dict, ctx) -> None:
    """Run the "train" job of core.jobs as `config` specifies, writing everything into ctx.run_dir.

    Config keys: "architecture" (ResNetConfig dict), "schedule" (Schedule dict, or None for
    `default_schedule`), "data" (core.data.DatasetSpec dict), "preprocessing" (optional
    Preprocessing dict), "weights" (core.weights spec), "train" (TrainOptions dict), "epochs"
    (used only without a schedule). See core/checkpoints.py for the files written.
    """
    train_run(config, ctx, ctx.run_dir, ctx.device, resuming=ctx.resuming)


def train_run(config: dict, ctx, run_dir, device: torch.device, resuming: bool = False, rank: int = 0,
              world_size: int = 1) -> FitResult:
    """Train from a run config to a finished run folder; run_job, the CLI and torchrun call it.

    Only rank 0 writes files. Raises LabError for a non-finite loss (after saving what is
    good) and for CUDA out-of-memory (after freeing the cache).
    """
    options = TrainOptions.from_dict(config.get("train"))
    out_of_memory = False
    try:
        return _train_run(config, ctx, run_dir, device, options, resuming, rank, world_size)
    except torch.OutOfMemoryError as error:
        logger.warning("CUDA out of memory at batch size %d: %s", options.batch_size, error)
        out_of_memory = True
    # Outside the except block, so the traceback no longer holds the step's tensors.
    if out_of_memory:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise LabError("train.err_oom", batch_size=options.batch_size, suggested=max(1, options.batch_size // 2))
    raise AssertionError("unreachable")


def _train_run(config: dict, ctx, run_dir, device: torch.device, options: TrainOptions, resuming: bool,
               rank: int, world_size: int) -> FitResult:
    run_dir = Path(run_dir)
    writer = rank == 0
    torch.manual_seed(options.seed)

    if resuming and (run_dir / checkpoints.CONFIG_FILE).is_file():
        # The same preprocessing as the first attempt (its statistics were fitted then).
        saved = checkpoints.read_run_config(run_dir)
        config = {**config, "preprocessing": saved.get("preprocessing")}
    data = prepare_data(config, options, device, rank, world_size)
    architecture, model, weights_report = build_model(config, data, options)

    steps_per_epoch = len(data.train)
    if config.get("schedule"):
        schedule = Schedule.from_dict(config["schedule"]).with_steps_per_epoch(steps_per_epoch)
    else:
        schedule = default_schedule(list(default_groups(model)), steps_per_epoch,
                                    int(config.get("epochs") or DEFAULT_EPOCHS))

    model.to(device)
    if uses_channels_last(device, options.channels_last):
        model.to(memory_format=torch.channels_last)
    groups_params = schedule.group_params(model)
    optimizer = schedule.build_optimizer(model, groups_params)

    state, best_state = None, None
    if resuming:
        state, best_state = _resume(run_dir, model, optimizer)
        if hasattr(ctx, "discard_metrics_after"):
            ctx.discard_metrics_after(state.step - 1 if state else -1)

    run_config = {
        "kind": "train",
        "architecture": architecture.to_dict(),
        "schedule": schedule.to_dict(),
        "data": data.summary["spec"],
        "dataset": data.summary,
        "class_names": data.classes,
        "preprocessing": data.preprocessing.to_dict(),
        "weights": config.get("weights") or {"kind": "none"},
        "weights_report": weights_report.to_dict() if weights_report is not None else None,
        "train": options.to_dict(),
        "device": str(device),
        "world_size": world_size,
        "torch_version": torch.__version__,
    }
    if writer:
        checkpoints.write_run_config(run_dir, run_config)

    wrapped = model
    if world_size > 1:
        wrapped = _wrap_ddp(model, device, schedule)

    def save_epoch(fit_state: FitState, improved: bool) -> None:
        # Metrics are stored before the checkpoint: a resume redoes only the steps after it, so
        # rows still buffered when the process dies would be lost for good. The weights carry
        # their loop counters, so a resume trusts them first (see _resume).
        if not writer:
            return
        if hasattr(ctx, "flush"):
            ctx.flush()
        counters = json.dumps(fit_state.to_dict())
        checkpoints.save_weights(model, run_dir / checkpoints.LAST_FILE, metadata={"counters": counters})
        if improved:
            checkpoints.save_weights(model, run_dir / checkpoints.BEST_FILE, metadata={"counters": counters})
        checkpoints.save_training_state(run_dir / checkpoints.STATE_FILE, optimizer, fit_state.to_dict())

    logger.info("training %s on %s: %d epochs × %d steps, batch %d", architecture.to_dict(), device,
                schedule.epochs, steps_per_epoch, options.batch_size)
    result = fit(wrapped, schedule, data.train, data.val, device, options, ctx=ctx, groups_params=groups_params,
                 optimizer=optimizer, state=state, best_state=best_state, on_epoch_end=save_epoch)

    usable = result.stop_reason != STOP_NON_FINITE or result.restored_best
    if writer and usable and (result.state.epoch > 0 or result.stop_reason == STOP_COMPLETED):
        checkpoints.save_weights(model, run_dir / checkpoints.MODEL_FILE)
        evaluation = evaluate_run(model, data, device, options, run_dir)
        _save_json(run_dir, "eval.json", evaluation)
    if writer:
        _save_json(run_dir, "summary.json", {
            "stop_reason": result.stop_reason, "history": result.history, "state": result.state.to_dict(),
            "non_finite_step": result.non_finite_step, "restored_best": result.restored_best,
        })
    _report_outcome(ctx, result, schedule, options)
    return result


def _wrap_ddp(model: nn.Module, device: torch.device, schedule: Schedule) -> nn.Module:
    """DistributedDataParallel over every parameter, frozen ones included.

    DDP registers the parameters that require grad when it is built; a group the schedule
    unfreezes later would otherwise never have its gradients averaged. So every parameter is
    registered, and when the schedule freezes anything, find_unused_parameters lets the frozen
    ones (no gradient) be skipped each step.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    freezes = any(group.unfreeze_epoch != 0 for group in schedule.groups)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=freezes)


def _resume(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer):
    """Load the last epoch's weights, counters and optimizer state; (None, None) to start over.

    The epoch-end files are written in the order last weights, best weights, optimizer state,
    and a process killed in between leaves newer weights beside older files. So the counters
    come from the last weights' own metadata. The optimizer state is used only when it belongs
    to the same step. When the last epoch was the best, its weights are the best ones.
    """
    last = run_dir / checkpoints.LAST_FILE
    if not last.is_file():
        logger.info("run %s: no checkpoint to resume from, starting over", run_dir.name)
        return None, None

    weights = checkpoints.load_weights(last)
    model.load_state_dict(weights)
    state = FitState.from_dict(json.loads(checkpoints.read_metadata(last)["counters"]))

    state_path = run_dir / checkpoints.STATE_FILE
    saved = checkpoints.load_training_state(state_path) if state_path.is_file() else None
    if saved is not None and saved["counters"].get("step") == state.step:
        optimizer.load_state_dict(saved["optimizer"])
    else:
        logger.warning("run %s: no optimizer state for step %d; the optimizer starts afresh", run_dir.name,
                       state.step)

    best_state = None
    best_path = run_dir / checkpoints.BEST_FILE
    if state.best_epoch == state.epoch - 1:
        best_state = weights
    elif best_path.is_file():
        best_state = checkpoints.load_weights(best_path)
    logger.info("run %s resumes at epoch %d, step %d", run_dir.name, state.epoch, state.step)
    return state, best_state


def _save_json(run_dir: Path, name: str, obj: object) -> None:
    path = run_dir / name
    temporary = path.with_name(name + ".tmp")
    temporary.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, path)


def evaluate_run(model: nn.Module, data: PreparedData, device: torch.device, options: TrainOptions,
                 run_dir) -> dict:
    """After-run numbers for the page: confusion matrix, per-class accuracy, highest-loss images.

    The images are saved as PNG under run_dir/top_losses/ exactly as the model saw them
    (resized by the run's preprocessing, before normalisation).
    """
    logits, labels = predict(unwrap(model), data.val_all, device, options.amp, options.channels_last)
    num_classes = len(data.classes)
    if labels.numel() == 0:
        return {"class_names": data.classes, "count": 0}

    losses = F.cross_entropy(logits, labels, reduction="none")  # (N,)
    probabilities = logits.softmax(dim=1)
    predictions = logits.argmax(dim=1)
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).view(
        num_classes, num_classes)  # rows: true class, columns: predicted class
    per_class_total = confusion.sum(dim=1)
    per_class_acc = [(confusion[i, i] / per_class_total[i]).item() if per_class_total[i] else None
                     for i in range(num_classes)]

    folder = run_dir / "top_losses"
    folder.mkdir(exist_ok=True)
    top = []
    for rank_index, index in enumerate(losses.argsort(descending=True)[: options.top_losses].tolist()):
        file_name = f"{rank_index:02d}.png"
        data.preprocessing.resize_image(data.val_split.load(index)).save(folder / file_name)
        top.append({
            "index": index, "name": data.val_split.display_name(index), "label": int(labels[index]),
            "pred": int(predictions[index]), "loss": float(losses[index]),
            "prob_pred": float(probabilities[index, predictions[index]]),
            "prob_label": float(probabilities[index, labels[index]]), "image": f"top_losses/{file_name}",
        })
    return {
        "class_names": data.classes,
        "count": int(labels.numel()),
        "val_loss": float(losses.mean()),
        "val_acc": float((predictions == labels).float().mean()),
        "confusion": confusion.tolist(),
        "per_class_acc": per_class_acc,
        "per_class_count": per_class_total.tolist(),
        "top_losses": top,
    }


def _report_outcome(ctx, result: FitResult, schedule, options: TrainOptions) -> None:
    """Tell the user why the run ended: a message on the run, or a LabError for a failure."""
    state, monitor = result.state, options.early_stopping.monitor
    best = "-" if state.best_value is None else f"{state.best_value:.4f}"
    # FitState counts epochs from 0; people and the charts count them from 1.
    best_epoch_shown = None if state.best_epoch is None else state.best_epoch + 1
    set_message = getattr(ctx, "set_message", None) or (lambda key, **params: None)

    if result.stop_reason == STOP_NON_FINITE:
        step = result.non_finite_step if result.non_finite_step is not None else state.step
        lr = max(schedule.lr(group, min(max(step, 0), schedule.total_steps - 1)) for group in schedule.group_names)
        checkpoint = (f"epoch {best_epoch_shown}" if result.restored_best else "-")
        raise LabError("train.err_nonfinite", step=step, lr=f"{lr:.2e}", checkpoint=checkpoint)
    if result.stop_reason == STOP_EARLY:
        set_message("train.msg_early_stop", epoch=state.epoch, monitor=monitor,
                    patience=options.early_stopping.patience, best_epoch=best_epoch_shown, best_value=best)
    elif result.stop_reason == STOP_CANCELLED:
        if state.best_epoch is None:
            set_message("train.msg_cancelled_no_epoch", step=state.step)
        else:
            set_message("train.msg_cancelled", step=state.step, best_epoch=best_epoch_shown)
    else:
        set_message("train.msg_completed", epochs=state.epoch, best_epoch=best_epoch_shown, monitor=monitor,
                    best_value=best)
