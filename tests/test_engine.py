"""The training engine on real data (scikit-learn's digits) and real processes.

Measured on the 2-core test machine (digits at 12×12, CIFAR-style ResNet-8 of width 8, AdamW
lr 1e-2, batch 32, 2 epochs): validation accuracy 0.958; chance is 0.10.
"""

import json
import math
import os
import signal
import time

import pytest
import torch
import torch.nn.functional as F

from core import checkpoints, jobs
from core.checkpoints import load_run_model
from core.engine import (STOP_CANCELLED, STOP_EARLY, EarlyStopping, EpochBatches, TrainOptions, TrainStep, evaluate, fit, train_run)
from core.errors import LabError
from core.groups import default_groups
from core.models import build_resnet, cifar_config
from core.schedule import GroupSchedule, Schedule

GROUPS = ("stem", "layer1", "layer2", "layer3", "head")
ARCH = cifar_config(8, base_width=8)
PREPROCESSING = {"input_size": 12, "channels": 1, "mean": [0.3], "std": [0.4]}
CPU = torch.device("cpu")


def schedule_dict(epochs=2, lr_max=1e-2, unfreeze=None, group_lrs=None, optimizer="adamw", **fields):
    unfreeze = unfreeze or {}
    group_lrs = group_lrs or {}
    groups = [GroupSchedule(name=g, unfreeze_epoch=unfreeze.get(g, 0), lr_max=group_lrs.get(g)) for g in GROUPS]
    # steps_per_epoch is a placeholder: the engine fits it to the data.
    return Schedule(groups=tuple(groups), epochs=epochs, steps_per_epoch=10, lr_max=lr_max, optimizer=optimizer,
                    **fields).to_dict()


def run_config(epochs=2, data=None, weights=None, train=None, **schedule_fields):
    return {
        "architecture": ARCH.to_dict(),
        "schedule": schedule_dict(epochs=epochs, **schedule_fields),
        "data": data or {"source": "digits"},
        "preprocessing": PREPROCESSING,
        "weights": weights or {"kind": "none"},
        "train": {"batch_size": 32, "log_every_steps": 5, **(train or {})},
    }


class RecordingContext:
    """A job context in memory: keeps every metric row and the final message."""

    def __init__(self, stop_after_steps=None):
        self.rows = []
        self.message = None
        self.progress = (0, 0)
        self.stop_after_steps = stop_after_steps
        self.checks = 0

    def log_metrics(self, step, metrics, series="train"):
        self.rows.append((series, step, dict(metrics)))

    def set_progress(self, done, total):
        self.progress = (done, total)

    def should_stop(self):
        self.checks += 1
        return self.stop_after_steps is not None and self.checks > self.stop_after_steps

    def set_message(self, key, **params):
        self.message = (key, params)

    def series(self, name):
        return [(step, metrics) for series, step, metrics in self.rows if series == name]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One full run on the digits, shared by the tests that read its outputs."""
    run_dir = tmp_path_factory.mktemp("digits-run")
    context = RecordingContext()
    result = train_run(run_config(epochs=2), context, run_dir, CPU)
    return run_dir, context, result


def test_digits_training_learns(digits_run):
    _, context, result = digits_run
    val_acc = [metrics["acc"] for _, metrics in context.series("val")]
    assert len(val_acc) == 2
    assert val_acc[-1] >= 0.90, f"validation accuracy {val_acc[-1]:.3f} after 2 epochs (chance 0.10)"
    assert result.stop_reason == "completed"
    assert context.message[0] == "train.msg_completed"


def test_every_step_logged(digits_run):
    run_dir, context, _ = digits_run
    schedule = Schedule.from_dict(checkpoints.read_run_config(run_dir)["schedule"])
    train_rows = context.series("train")
    assert [step for step, _ in train_rows] == list(range(schedule.total_steps))
    for step, metrics in train_rows:
        for group in GROUPS:
            assert metrics[f"lr/{group}"] == schedule.lr(group, step)
            assert metrics[f"grad_norm/{group}"] > 0
        assert metrics["grad_norm"] == pytest.approx(
            math.sqrt(sum(metrics[f"grad_norm/{g}"] ** 2 for g in GROUPS)), rel=1e-5)
    assert all(metrics["images_per_s"] > 0 for _, metrics in train_rows if "images_per_s" in metrics)


def test_run_folder_holds_config_and_loadable_model(digits_run):
    run_dir, context, _ = digits_run
    config = checkpoints.read_run_config(run_dir)
    assert config["class_names"] == [str(d) for d in range(10)]
    assert config["preprocessing"]["input_size"] == 12
    assert config["architecture"]["num_classes"] == 10
    assert config["architecture"]["in_channels"] == 1

    loaded = load_run_model(run_dir)
    stored = json.loads((run_dir / "eval.json").read_text())
    images, labels = _digits_val_tensors(config)
    accuracy = (loaded.model(images).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(stored["val_acc"], abs=1e-6)
    assert stored["val_acc"] == pytest.approx(context.series("val")[-1][1]["acc"], abs=1e-6)


def _digits_val_tensors(config):
    from core.data import Preprocessing, load_dataset, tensor_dataset

    dataset = load_dataset(config["data"])
    return tensor_dataset(dataset.val, Preprocessing.from_dict(config["preprocessing"])).tensors


def test_after_run_evaluation_files(digits_run):
    run_dir, _, _ = digits_run
    stored = json.loads((run_dir / "eval.json").read_text())
    confusion = torch.tensor(stored["confusion"])
    assert confusion.shape == (10, 10)
    assert confusion.sum().item() == stored["count"]
    assert stored["per_class_acc"][3] == pytest.approx((confusion[3, 3] / confusion[3].sum()).item())
    losses = [item["loss"] for item in stored["top_losses"]]
    assert losses == sorted(losses, reverse=True)
    assert all((run_dir / item["image"]).is_file() for item in stored["top_losses"])


def test_start_from_previous_run_checkpoint(tmp_path):
    """Digits 0–4, then feature extraction on 5–9 from that run: the frozen backbone stays that run's."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir(), second_dir.mkdir()
    low = {"source": "digits", "classes": ["0", "1", "2", "3", "4"]}
    high = {"source": "digits", "classes": ["5", "6", "7", "8", "9"]}
    train_run(run_config(epochs=1, data=low), RecordingContext(), first_dir, CPU)

    weights = {"kind": "run", "run_id": "first", "path": str(first_dir / checkpoints.MODEL_FILE)}
    frozen_backbone = {g: None for g in GROUPS[:-1]}
    context = RecordingContext()
    train_run(run_config(epochs=2, data=high, weights=weights, unfreeze=frozen_backbone, lr_max=3e-2), context,
              second_dir, CPU)

    report = checkpoints.read_run_config(second_dir)["weights_report"]
    first = checkpoints.load_weights(first_dir / checkpoints.MODEL_FILE)
    second = checkpoints.load_weights(second_dir / checkpoints.MODEL_FILE)
    assert report["replaced_head"] == []
    assert report["loaded"] == len(first)
    backbone = [name for name in first if not name.startswith("fc.")]
    assert all(torch.equal(first[name], second[name]) for name in backbone)  # weights and BN statistics
    assert not torch.equal(first["fc.weight"], second["fc.weight"])
    assert checkpoints.read_run_config(second_dir)["class_names"] == ["5", "6", "7", "8", "9"]
    print("val acc on 5-9 from the 0-4 backbone:", context.series("val")[-1][1]["acc"])
    assert context.series("val")[-1][1]["acc"] > 0.5


def test_resume_after_cancel_matches_uninterrupted_run(tmp_path):
    """Cancelled during epoch 1, resumed from the epoch-0 checkpoint: the same final weights, bit for bit."""
    config = run_config(epochs=3, data={"source": "digits", "max_per_class": 20},
                        train={"early_stopping": {"patience": None}})
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    train_run(config, RecordingContext(), whole, CPU)
    steps_per_epoch = Schedule.from_dict(checkpoints.read_run_config(whole)["schedule"]).steps_per_epoch

    train_run(config, RecordingContext(stop_after_steps=steps_per_epoch + 2), parts, CPU)
    context = RecordingContext()
    result = train_run(config, context, parts, CPU, resuming=True)

    assert result.stop_reason == "completed"
    assert context.series("train")[0][0] == steps_per_epoch  # continued at epoch 1, step 0 of it
    expected = checkpoints.load_weights(whole / checkpoints.MODEL_FILE)
    resumed = checkpoints.load_weights(parts / checkpoints.MODEL_FILE)
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def tiny_data(count=96, size=8, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    images = torch.randn(count, 1, size, size, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return images, labels


def tiny_model(seed=0):
    return build_resnet(cifar_config(8, base_width=4, in_channels=1, input_size=8, num_classes=4), seed=seed)


def tiny_schedule(model, batches, epochs=2, **fields):
    groups = tuple(GroupSchedule(name=g, unfreeze_epoch=fields.pop("unfreeze", {}).get(g, 0))
                   for g in default_groups(model))
    return Schedule(groups=groups, epochs=epochs, steps_per_epoch=len(batches), **fields)


@pytest.mark.parametrize("frozen_bn, unchanged", [("eval", True), ("train", False)])
def test_frozen_batchnorm_statistics(frozen_bn, unchanged):
    images, labels = tiny_data()
    model = tiny_model()
    batches = EpochBatches(torch.utils.data.TensorDataset(images, labels), 16, shuffle=True, drop_last=True)
    val = EpochBatches(torch.utils.data.TensorDataset(images, labels), 32, shuffle=False)
    groups = tuple(GroupSchedule(name=g, unfreeze_epoch=None if g in ("stem", "layer1") else 0)
                   for g in default_groups(model))
    schedule = Schedule(groups=groups, epochs=1, steps_per_epoch=len(batches), frozen_bn=frozen_bn)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    fit(model, schedule, batches, val, CPU, TrainOptions(log_every_steps=1))

    after = model.state_dict()
    frozen_stats = [k for k in after if k.startswith(("bn1.running", "layer1.")) and "running_" in k]
    trained_stats = [k for k in after if k.startswith("layer3.") and "running_mean" in k]
    assert frozen_stats and trained_stats
    assert all(torch.equal(before[k], after[k]) for k in frozen_stats) == unchanged
    assert not any(torch.equal(before[k], after[k]) for k in trained_stats)
    frozen_weights = [k for k in after if k.startswith("layer1.") and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in frozen_weights)


def test_early_stopping_restores_best_weights():
    """Validation labels shifted by one: the better the model learns, the worse validation gets."""
    images, labels = tiny_data()
    model = tiny_model()
    batches = EpochBatches(torch.utils.data.TensorDataset(images, labels), 16, shuffle=True, drop_last=True)
    wrong = EpochBatches(torch.utils.data.TensorDataset(images, (labels + 1) % 4), 32, shuffle=False)
    schedule = tiny_schedule(model, batches, epochs=6, lr_max=3e-2)
    snapshots = {}

    def remember(state, improved):
        snapshots[state.epoch - 1] = {k: v.clone() for k, v in model.state_dict().items()}

    options = TrainOptions(log_every_steps=1, early_stopping=EarlyStopping("val_loss", patience=2, min_delta=0.0))
    result = fit(model, schedule, batches, wrong, CPU, options, on_epoch_end=remember)

    best = result.state.best_epoch
    assert result.stop_reason == STOP_EARLY
    assert result.state.epoch == best + 3  # the best epoch, then `patience` epochs without improvement
    assert result.restored_best
    assert all(torch.equal(v, snapshots[best][k]) for k, v in model.state_dict().items())
    assert evaluate(model, wrong, CPU).loss == pytest.approx(result.history[best]["val_loss"], rel=1e-6)


def test_early_stopping_on_accuracy_uses_min_delta():
    stopping = EarlyStopping("val_acc", patience=1, min_delta=0.01)
    assert stopping.is_improvement(0.5, None)
    assert not stopping.is_improvement(0.505, 0.5)
    assert stopping.is_improvement(0.52, 0.5)


def test_huge_learning_rate_is_caught_and_explained(tmp_path):
    """Epoch 0 trains the head gently; from epoch 1 the body joins at LR 1e4 and the loss blows up.

    Without BatchNorm nothing rescales the activations, so the weights' growth compounds layer
    after layer until the loss overflows.
    """
    body = {g: 1 for g in GROUPS[:-1]}
    config = run_config(epochs=2, data={"source": "digits", "max_per_class": 40}, optimizer="sgd",
                        unfreeze=body, group_lrs={g: 1e4 for g in body}, train={"log_every_steps": 1})
    config["architecture"] = ARCH.replace(batch_norm=False).to_dict()
    context = RecordingContext()
    with pytest.raises(LabError) as error:
        train_run(config, context, tmp_path, CPU)

    assert error.value.key == "train.err_nonfinite"
    steps_per_epoch = Schedule.from_dict(checkpoints.read_run_config(tmp_path)["schedule"]).steps_per_epoch
    assert error.value.params["step"] >= steps_per_epoch
    assert error.value.params["checkpoint"] == "epoch 1"  # shown to people counting from 1
    assert "LR" in str(error.value)
    assert "gradient clipping" in str(error.value)
    last_good = checkpoints.load_weights(tmp_path / checkpoints.LAST_FILE)
    assert all(torch.isfinite(t.float()).all() for t in last_good.values())
    assert torch.equal(checkpoints.load_weights(tmp_path / checkpoints.MODEL_FILE)["conv1.weight"],
                       last_good["conv1.weight"])
    assert all(math.isfinite(metrics["loss"]) for _, metrics in context.series("train"))


def test_cancel_stops_before_the_next_step():
    images, labels = tiny_data()
    model = tiny_model()
    batches = EpochBatches(torch.utils.data.TensorDataset(images, labels), 8, shuffle=True, drop_last=True)
    context = RecordingContext(stop_after_steps=5)
    result = fit(model, tiny_schedule(model, batches), batches, batches, CPU, TrainOptions(log_every_steps=3),
                 ctx=context)
    assert result.stop_reason == STOP_CANCELLED
    assert result.state.step == 5
    assert [step for step, _ in context.series("train")] == [0, 1, 2, 3, 4]  # the partial interval too


def test_out_of_memory_becomes_message_with_smaller_batch(tmp_path):
    class OutOfMemoryContext(RecordingContext):
        def should_stop(self):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    config = run_config(epochs=1, data={"source": "digits", "max_per_class": 20}, train={"batch_size": 16})
    with pytest.raises(LabError) as error:
        train_run(config, OutOfMemoryContext(), tmp_path, CPU)
    assert error.value.key == "train.err_oom"
    assert error.value.params == {"batch_size": 16, "suggested": 8}


def test_step_gradient_norms_and_clipping_match_autograd():
    images, labels = tiny_data(count=16)
    model, reference = tiny_model(), tiny_model()
    groups = {g: [n for n, _ in model.named_parameters() if n.split(".")[0] in prefixes]
              for g, prefixes in {"stem": ("conv1", "bn1"), "layer1": ("layer1",), "layer2": ("layer2",),
                                  "layer3": ("layer3",), "head": ("fc",)}.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    output = TrainStep(model, optimizer, groups, CPU, grad_clip_norm=0.5)(images, labels)

    loss = F.cross_entropy(reference(images), labels)
    loss.backward()
    grads = dict((n, p.grad) for n, p in reference.named_parameters())
    expected = [torch.sqrt(sum((grads[n] ** 2).sum() for n in names)).item() for names in groups.values()]
    assert output.loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert output.grad_norms.tolist() == pytest.approx(expected, rel=1e-5)
    total = math.sqrt(sum(x * x for x in expected))
    assert output.grad_norm.item() == pytest.approx(total, rel=1e-5)

    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    reference_optimizer.step()
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_epoch_batches_shard_without_overlap_and_reshuffle():
    dataset = torch.utils.data.TensorDataset(torch.arange(50).float().view(-1, 1), torch.arange(50))
    shards = [EpochBatches(dataset, 4, shuffle=True, seed=1, drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([labels for _, labels in shard]).tolist() for shard in shards]
    assert len(shards[0]) == len(shards[1]) == 6
    assert not set(seen[0]) & set(seen[1])
    shards[0].set_epoch(1)
    assert torch.cat([labels for _, labels in shards[0]]).tolist() != seen[0]


def test_options_reject_unknown_fields():
    with pytest.raises(LabError) as error:
        TrainOptions.from_dict({"batch_size": 8, "turbo": True})
    assert error.value.key == "train.err_unknown_options"


# --- through the worker process ------------------------------------------------------------------


def wait_for(predicate, timeout_s=90.0, interval_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One runs dir and one worker for the worker tests: the worker's imports are paid once."""
    root = tmp_path_factory.mktemp("worker-runs")
    patch = pytest.MonkeyPatch()
    patch.setenv("RESNET_LAB_RUNS_DIR", str(root))
    patch.setenv("RESNET_LAB_WORKER_THREADS", "1")
    patch.setenv("RESNET_LAB_WORKER_IDLE_EXIT_S", "60")
    store = jobs.Store(root)
    yield store
    for pid in store.live_workers("cpu"):
        os.kill(pid, signal.SIGTERM)
    patch.undo()


def slow_config(epochs):
    return {**run_config(epochs=epochs, data={"source": "digits", "max_per_class": 30}), "device": "cpu"}


def test_worker_cancel_ends_run_as_cancelled(store):
    run_id = store.submit("train", slow_config(epochs=40))
    store.ensure_worker("cpu")
    wait_for(lambda: not store.metrics(run_id, series="train").empty)
    store.cancel(run_id)
    cancelled_at = time.monotonic()
    run = wait_for(lambda: (r := store.get(run_id)).status == jobs.CANCELLED and r)
    assert time.monotonic() - cancelled_at < 20
    assert run.progress_done < run.progress_total
    assert run.message_key in ("train.msg_cancelled", "train.msg_cancelled_no_epoch")


def test_killed_worker_is_interrupted_then_resumes(store):
    epochs = 3
    run_id = store.submit("train", slow_config(epochs=epochs))
    store.ensure_worker("cpu")
    run_dir = store.run_dir(run_id)
    wait_for(lambda: (run_dir / checkpoints.STATE_FILE).is_file())
    os.kill(store.get(run_id).worker_pid, signal.SIGKILL)

    wait_for(lambda: store.recover_orphans() or store.get(run_id).status == jobs.INTERRUPTED, timeout_s=10)
    assert store.get(run_id).status == jobs.INTERRUPTED
    jobs.resume(run_id)
    run = wait_for(lambda: (r := store.get(run_id)).status in jobs.FINAL_STATUSES and r, timeout_s=120)

    assert run.status == jobs.DONE, run.message_key
    steps = store.metrics(run_id, series="train")["step"].tolist()
    total = Schedule.from_dict(checkpoints.read_run_config(run_dir)["schedule"]).total_steps
    assert sorted(steps) == list(range(total))  # nothing lost, nothing logged twice
    assert store.metrics(run_id, series="val")["epoch"].tolist() == list(range(epochs))
    assert "resumes at epoch" in (store.root / jobs.WORKER_LOG).read_text()


def test_empty_validation_set_trains_without_early_stopping():
    images, labels = tiny_data()
    model = tiny_model()
    batches = EpochBatches(torch.utils.data.TensorDataset(images, labels), 16, shuffle=True, drop_last=True)
    empty = EpochBatches(torch.utils.data.TensorDataset(images[:0], labels[:0]), 16, shuffle=False)
    options = TrainOptions(early_stopping=EarlyStopping(patience=1))
    result = fit(model, tiny_schedule(model, batches, epochs=3), batches, empty, CPU, options)
    assert result.stop_reason == "completed"
    assert result.state.epoch == 3
    assert result.history == []
    assert not result.restored_best
