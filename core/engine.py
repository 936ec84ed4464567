"""The one training loop of the lab.

Every job that trains (a run from the Entrenamiento page, the degradation demo, the LR finder,
the command line, torchrun) goes through the same pieces:

- `TrainStep`: one optimizer step with switches, never duplicated branches: bf16 autocast and
  channels_last (CUDA only), gradient-norm per layer group, optional clipping of the global
  norm, then `optimizer.step()`. It returns device tensors and never synchronises.
- `fit(...)`: epochs of `TrainStep` driven by the Fine-tuning `Schedule` (per-step LRs,
  freezing, frozen BatchNorm in eval mode), validation after each epoch, early stopping, the
  best weights restored at the end whatever ended the run, cancel checked before every step,
  and a non-finite loss stopping the run. Metrics leave the device once per
  `log_every_steps` (one transfer), yet every step gets its own row.
- `evaluate(...)` / `predict(...)`: validation loss and accuracy, and per-sample outputs for
  the confusion matrix and the highest-loss images.
- `run_job(config, ctx)`: the "train" job: data, model, weights, schedule from the run
  config, then `fit`, checkpoints and the after-run evaluation.

Metric names (the page and the CLI read these): train series "loss", "acc", "grad_norm",
"grad_norm/<group>", "lr/<group>", "images_per_s", "epoch"; val series "loss", "acc", "epoch".
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import LabError

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
    """What fit() reports to: a JobContext, the CLI's printer, or NullContext."""

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

    `groups_params` maps group names to parameter names of `unwrap(model)`; the gradient norm of
    every group is measured on each step because the page plots it, and the global norm for
    clipping is computed from the same per-group norms (no second pass over the gradients).
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

    def _grad_norms(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        norms, gradients = [], []
        for parameters in self.group_parameters:
            grads = [p.grad for p in parameters if p.grad is not None]
            gradients.extend(grads)
            norms.append(torch.nn.utils.get_total_norm(grads) if grads else self._no_grad_norm)
        return torch.stack(norms), gradients  # (G,)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        images, labels = to_device(images, labels, self.device, self.channels_last)

        with autocast_for(self.device, self.amp):
            logits = self.model(images)  # (B, num_classes)
        loss = self.loss(logits, labels)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

        grad_norms, gradients = self._grad_norms()
        grad_norm = torch.linalg.vector_norm(torch.nan_to_num(grad_norms, nan=0.0))
        if self.grad_clip_norm is not None and gradients:
            torch.nn.utils.clip_grads_with_norm_(gradients, self.grad_clip_norm, grad_norm)
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
    """Mean cross-entropy and accuracy over `batches`, summed over all processes under DDP."""
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
        self.pending: list[tuple[int, int, torch.Tensor, dict[str, float]]] = []
        self.images = 0
        self.started = time.perf_counter()

    def add(self, step: int, epoch: int, output: StepOutput, lrs: dict[str, float]) -> None:
        # One small device tensor per step: [loss, correct, batch size, global norm, norm per group].
        packed = torch.cat([
            output.loss.view(1), output.correct.view(1).float(),
            torch.tensor([float(output.batch_size)], device=output.loss.device),
            output.grad_norm.view(1).float(), output.grad_norms.float(),
        ])
        self.pending.append((step, epoch, packed, lrs))
        self.images += output.batch_size

    def restart_clock(self) -> None:
        self.images = 0
        self.started = time.perf_counter()

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """All pending rows as (step, metrics); one device→host transfer."""
        if not self.pending:
            return []
        values = torch.stack([packed for _, _, packed, _ in self.pending]).cpu().tolist()
        elapsed = time.perf_counter() - self.started
        rows = []
        for (step, epoch, _, lrs), row in zip(self.pending, values):
            loss, correct, batch_size, grad_norm, *group_norms = row
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
    """The LR each named group trains with (a group split for weight decay has one LR)."""
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
    """An epoch's batches: iterable, sized, reshuffled by set_epoch (core.engine.TensorBatches)."""

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
    with finite metrics (where run_job writes checkpoints). Returns why the loop ended; the model
    holds the best weights when `options.restore_best` and an epoch was validated.
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

        if stop_reason == STOP_COMPLETED:
            non_finite_step = _log_rows(ctx, rows.drain(), series, device)
            if non_finite_step is not None:
                stop_reason = STOP_NON_FINITE
        if stop_reason != STOP_COMPLETED:
            break

        result = evaluate(model, val_batches, device, options.amp, options.channels_last)
        if not math.isfinite(result.loss):
            stop_reason, non_finite_step = STOP_NON_FINITE, state.step - 1
            break
        ctx.log_metrics(state.step - 1, {"loss": result.loss, "acc": result.acc, "epoch": state.epoch}, val_series)
        history.append({"epoch": state.epoch, "step": state.step - 1, "val_loss": result.loss, "val_acc": result.acc})

        value = result.loss if stopping.monitor == "val_loss" else result.acc
        improved = stopping.is_improvement(value, state.best_value)
        if improved:
            state.best_value, state.best_epoch = value, state.epoch
            state.epochs_without_improvement = 0
            best_state = _cpu_state(model)
        else:
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
        # After a non-finite loss the current weights are unusable whatever the option says.
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


class TensorBatches:
    """Batches of an in-memory (images, labels) pair, reshuffled per epoch from a seed.

    Under DDP each process takes its own slice of every epoch's permutation; for training
    (`drop_last=True`) every process gets the same number of full batches, as DDP requires.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.images, self.labels = images, labels  # (N, C, H, W), (N,)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        count = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.arange(count)
        if self.drop_last:
            order = order[: count // self.world_size * self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        count = len(self.labels)
        per_process = count // self.world_size if self.drop_last else math.ceil((count - self.rank) / self.world_size)
        if self.drop_last:
            return per_process // self.batch_size
        return math.ceil(per_process / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]


@contextlib.contextmanager
def cuda_oom_guard(batch_size: int) -> Iterator[None]:
    """Turn CUDA out-of-memory into a LabError suggesting half the batch, after freeing the cache."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        logger.warning("CUDA out of memory at batch size %d: %s", batch_size, error)
        del error
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise LabError("train.err_oom", batch_size=batch_size, suggested=max(1, batch_size // 2)) from None
