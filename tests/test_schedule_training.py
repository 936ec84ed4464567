"""A short real training run through core.engine.fit with one unfreeze event: what the optimizer
and the parameters see at every step is what the schedule says."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from core.engine import EarlyStopping, EpochBatches, TrainOptions, fit
from core.models import build_resnet, cifar_config
from core.schedule import GroupSchedule, Schedule

EPOCHS, STEPS_PER_EPOCH, BATCH = 3, 3, 4
UNFREEZE_EPOCH = 1  # layer3 joins the head here; the rest of the backbone never trains
UNFREEZE_STEP = UNFREEZE_EPOCH * STEPS_PER_EPOCH


def make_schedule(optimizer: str) -> Schedule:
    groups = (
        GroupSchedule("stem", unfreeze_epoch=None),
        GroupSchedule("layer1", unfreeze_epoch=None),
        GroupSchedule("layer2", unfreeze_epoch=None),
        GroupSchedule("layer3", unfreeze_epoch=UNFREEZE_EPOCH),
        GroupSchedule("head", unfreeze_epoch=0),
    )
    return Schedule(groups=groups, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, optimizer=optimizer,
                    lr_max=0.05, lr_min=1e-3, lr_decay=0.1, warmup_steps=2, weight_decay=1e-2)


class StepRecorder:
    """A forward pre-hook: at every training forward (after Schedule.apply, before the update)
    it records the optimizer's LRs, the requires_grad flags, the BN modes and the parameters."""

    def __init__(self, model: nn.Module, optimizer_ref: list) -> None:
        self.model = model
        self.optimizer_ref = optimizer_ref
        self.steps: list[dict] = []
        model.register_forward_pre_hook(self)

    def __call__(self, module, inputs) -> None:
        if not module.training:
            return  # validation pass
        optimizer = self.optimizer_ref[0]
        self.steps.append({
            "lrs": [(group["name"], group["lr"]) for group in optimizer.param_groups],
            "requires_grad": {name: p.requires_grad for name, p in module.named_parameters()},
            "bn_training": {name: m.training for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)},
            "params": {name: p.detach().clone() for name, p in module.named_parameters()},
        })


@pytest.fixture(scope="module", params=["adamw", "sgd"])
def run(request):
    torch.manual_seed(0)
    model = build_resnet(cifar_config(8, base_width=4, num_classes=3, input_size=16), seed=0)
    schedule = make_schedule(request.param)
    groups_params = schedule.group_params(model)
    optimizer = schedule.build_optimizer(model, groups_params)
    recorder = StepRecorder(model, [optimizer])
    initial_buffers = {name: b.clone() for name, b in model.named_buffers()}

    generator = torch.Generator().manual_seed(1)
    images = torch.randn(EPOCHS * BATCH, 3, 16, 16, generator=generator)  # (N, C, H, W)
    labels = torch.randint(0, 3, (EPOCHS * BATCH,), generator=generator)
    train_count = STEPS_PER_EPOCH * BATCH
    train = EpochBatches(TensorDataset(images[:train_count], labels[:train_count]), BATCH, shuffle=True)
    val = EpochBatches(TensorDataset(images, labels), BATCH, shuffle=False)
    options = TrainOptions(batch_size=BATCH, amp=False, channels_last=False, restore_best=False,
                           early_stopping=EarlyStopping(patience=None))

    buffers_after_epoch = {}
    fit(model, schedule, train, val, torch.device("cpu"), options, groups_params=groups_params,
        optimizer=optimizer,
        on_epoch_end=lambda state, improved: buffers_after_epoch.setdefault(
            state.epoch - 1, {name: b.clone() for name, b in model.named_buffers()}))
    final = {name: p.detach().clone() for name, p in model.named_parameters()}
    return dict(schedule=schedule, groups_params=groups_params, steps=recorder.steps, final=final,
                initial_buffers=initial_buffers, buffers_after_epoch=buffers_after_epoch)


def group_of(run, parameter: str) -> str:
    return next(g for g, names in run["groups_params"].items() if parameter in names)


def test_every_step_ran(run):
    assert len(run["steps"]) == EPOCHS * STEPS_PER_EPOCH


def test_optimizer_lr_equals_the_schedule_at_every_step(run):
    schedule = run["schedule"]
    for step, record in enumerate(run["steps"]):
        assert record["lrs"] == [(name, schedule.lr(name, step)) for name, _ in record["lrs"]]


def test_requires_grad_equals_the_schedule_at_every_step(run):
    schedule = run["schedule"]
    for step, record in enumerate(run["steps"]):
        expected = {p: schedule.trainable(group_of(run, p), step) for p in record["requires_grad"]}
        assert record["requires_grad"] == expected


def test_frozen_batch_norm_is_in_eval_mode(run):
    schedule = run["schedule"]
    for step, record in enumerate(run["steps"]):
        expected = {m: schedule.trainable(group_of(run, f"{m}.weight"), step) for m in record["bn_training"]}
        assert record["bn_training"] == expected


def test_unfrozen_group_lr_follows_the_scaled_curve(run):
    schedule = run["schedule"]
    lrs = [dict(record["lrs"])["layer3"] for record in run["steps"]]
    expected = [0.0] * UNFREEZE_STEP + [0.1 * schedule.lr("head", s) for s in range(UNFREEZE_STEP, EPOCHS * STEPS_PER_EPOCH)]
    assert lrs == pytest.approx(expected, abs=1e-12, rel=1e-12)


def test_batch_norm_statistics_unchanged_after_the_frozen_epoch(run):
    after = run["buffers_after_epoch"][0]
    layer3 = [name for name in after if name.startswith("layer3.") and "running" in name]
    assert layer3 and all(torch.equal(after[name], run["initial_buffers"][name]) for name in layer3)


def test_never_unfrozen_batch_norm_statistics_unchanged_at_the_end(run):
    after = run["buffers_after_epoch"][EPOCHS - 1]
    frozen = [name for name in after if name.startswith(("bn1.", "layer1.", "layer2.")) and "running" in name]
    assert frozen and all(torch.equal(after[name], run["initial_buffers"][name]) for name in frozen)


def test_unfrozen_batch_norm_statistics_update_after_unfreezing(run):
    after = run["buffers_after_epoch"][EPOCHS - 1]
    assert not torch.equal(after["layer3.0.bn1.running_mean"], run["initial_buffers"]["layer3.0.bn1.running_mean"])


def parameters_after(run, step: int) -> dict[str, torch.Tensor]:
    steps = run["steps"]
    return steps[step + 1]["params"] if step + 1 < len(steps) else run["final"]


def test_frozen_parameters_are_bit_identical_while_frozen(run):
    for step, record in enumerate(run["steps"]):
        after = parameters_after(run, step)
        for name, before in record["params"].items():
            if not record["requires_grad"][name]:
                assert torch.equal(after[name], before), f"{name} changed at frozen step {step}"


def test_unfrozen_parameters_update_from_their_first_trainable_step(run):
    before = run["steps"][UNFREEZE_STEP]["params"]
    after = parameters_after(run, UNFREEZE_STEP)
    for name in run["groups_params"]["layer3"]:
        assert not torch.equal(after[name], before[name]), f"{name} did not move at step {UNFREEZE_STEP}"


def test_head_parameters_update_from_the_first_step(run):
    before, after = run["steps"][0]["params"], parameters_after(run, 0)
    assert all(not torch.equal(after[name], before[name]) for name in run["groups_params"]["head"])
