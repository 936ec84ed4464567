"""The fine-tuning schedule: exact values at analytic points, torch agreement, presets, JSON,
validation and the optimizer side (param groups, requires_grad, frozen BatchNorm)."""

import json
import math
import pickle

import pytest
import torch
from torch import nn

from core.errors import LabError
from core.groups import default_groups, group_parameter_counts
from core.models import build_resnet, cifar_config, imagenet_config
from core.schedule import (
    PRESETS,
    SCHEDULE_VERSION,
    GroupSchedule,
    Schedule,
    make_preset,
)

IMAGENET_GROUPS = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
TOL = dict(abs=1e-12, rel=1e-12)


def analytic_schedule(**changes) -> Schedule:
    """4 epochs × 10 steps, warmup 3 steps from 0.1, cosine over T = 40 − 1 − 3 = 36 steps,
    head 1e-3 → 1e-5, factor 0.1 per group towards the input."""
    values = dict(
        groups=tuple(GroupSchedule(name) for name in IMAGENET_GROUPS),
        epochs=4,
        steps_per_epoch=10,
        lr_max=1e-3,
        lr_min=1e-5,
        lr_decay=0.1,
        warmup_steps=3,
        warmup_start_factor=0.1,
    )
    values.update(changes)
    return Schedule(**values)


def tiny_model() -> nn.Module:
    return build_resnet(cifar_config(8, base_width=4, num_classes=3), seed=0)


# Group multipliers under lr_decay = 0.1: the head is 1, each group towards the input ÷10.
MULTIPLIERS = {"head": 1.0, "layer4": 1e-1, "layer3": 1e-2, "layer2": 1e-3, "layer1": 1e-4, "stem": 1e-5}


class TestAnalyticPoints:
    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_first_step_is_start_factor_times_peak(self, group):
        s = analytic_schedule()
        assert s.lr(group, 0) == pytest.approx(0.1 * 1e-3 * MULTIPLIERS[group], **TOL)

    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_warmup_rises_linearly(self, group):
        s = analytic_schedule()
        peak = 1e-3 * MULTIPLIERS[group]
        assert s.lr(group, 1) == pytest.approx(0.4 * peak, **TOL)
        assert s.lr(group, 2) == pytest.approx(0.7 * peak, **TOL)

    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_end_of_warmup_is_the_peak(self, group):
        s = analytic_schedule()
        assert s.lr(group, 3) == pytest.approx(1e-3 * MULTIPLIERS[group], **TOL)

    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_quarter_cosine(self, group):
        s = analytic_schedule()
        hi, lo = 1e-3 * MULTIPLIERS[group], 1e-5 * MULTIPLIERS[group]
        expected = lo + 0.5 * (hi - lo) * (1 + math.sqrt(0.5))  # t = 9 of 36: cos(π/4)
        assert s.lr(group, 3 + 9) == pytest.approx(expected, **TOL)

    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_middle_of_cosine_is_the_midpoint(self, group):
        s = analytic_schedule()
        expected = (1e-3 + 1e-5) / 2 * MULTIPLIERS[group]  # t = 18 of 36: cos(π/2) = 0
        assert s.lr(group, 3 + 18) == pytest.approx(expected, **TOL)

    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_last_step_is_lr_min_of_the_group(self, group):
        s = analytic_schedule()
        assert s.lr(group, 39) == pytest.approx(1e-5 * MULTIPLIERS[group], **TOL)

    def test_head_ends_exactly_at_lr_min(self):
        s = analytic_schedule(lr_min=3.7e-6)
        assert s.lr("head", s.total_steps - 1) == 3.7e-6

    @pytest.mark.parametrize("group", IMAGENET_GROUPS)
    def test_every_group_ends_exactly_at_its_own_floor(self, group):
        s = analytic_schedule()
        assert s.lr(group, s.total_steps - 1) == s.group_lr_min(group)

    def test_warmup_in_epochs_equals_warmup_in_steps(self):
        in_epochs = analytic_schedule(warmup_steps=0, warmup_epochs=1)
        in_steps = analytic_schedule(warmup_steps=10)
        for step in range(40):
            assert in_epochs.lr("head", step) == in_steps.lr("head", step)

    def test_warmup_in_epochs_follows_steps_per_epoch(self):
        s = analytic_schedule(warmup_steps=0, warmup_epochs=2).with_steps_per_epoch(7)
        assert s.n_warmup_steps == 14


class TestWarmup:
    @pytest.mark.parametrize("start_factor", [1e-3, 0.1, 0.5, 1.0])
    def test_first_warmup_step_learns(self, start_factor):
        s = analytic_schedule(warmup_start_factor=start_factor)
        assert s.lr("head", 0) > 0
        assert s.lr("head", 0) == pytest.approx(start_factor * 1e-3, **TOL)

    def test_zero_warmup_is_plain_cosine_at_every_step(self):
        s = analytic_schedule(warmup_steps=0)
        for step in range(40):
            expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * step / 39))
            assert s.lr("head", step) == pytest.approx(expected, **TOL)

    def test_zero_warmup_starts_exactly_at_the_peak(self):
        assert analytic_schedule(warmup_steps=0).lr("head", 0) == 1e-3

    def test_warmup_may_leave_just_the_peak_and_the_floor(self):
        s = analytic_schedule(warmup_steps=38)
        assert s.lr("head", 37) == pytest.approx(1e-3 * (0.1 + 0.9 * 37 / 38), **TOL)
        assert (s.lr("head", 38), s.lr("head", 39)) == (1e-3, 1e-5)

    def test_two_step_run_is_peak_then_floor(self):
        s = analytic_schedule(epochs=1, steps_per_epoch=2, warmup_steps=0)
        assert (s.lr("head", 0), s.lr("head", 1)) == (1e-3, 1e-5)


class TestUnfreezing:
    def schedule(self) -> Schedule:
        groups = (
            GroupSchedule("stem", unfreeze_epoch=None),
            GroupSchedule("body", unfreeze_epoch=2),
            GroupSchedule("head", unfreeze_epoch=0),
        )
        return Schedule(groups=groups, epochs=4, steps_per_epoch=5, lr_max=1e-2, lr_min=1e-4,
                        lr_decay=0.5, warmup_steps=2)

    def test_frozen_before_its_epoch(self):
        s = self.schedule()
        assert [s.trainable("body", step) for step in range(20)] == [False] * 10 + [True] * 10

    def test_lr_is_zero_while_frozen(self):
        s = self.schedule()
        assert [s.lr("body", step) for step in range(10)] == [0.0] * 10

    def test_unfrozen_group_is_scaled_head_curve(self):
        s = self.schedule()
        for step in range(10, 20):
            assert s.lr("body", step) == pytest.approx(0.5 * s.lr("head", step), **TOL)

    def test_after_unfreezing_the_lr_keeps_annealing(self):
        s = self.schedule()
        values = [s.lr("body", step) for step in range(10, 20)]
        assert all(a > b for a, b in zip(values, values[1:]))

    def test_first_unfrozen_step_is_the_cosine_value_there(self):
        s = self.schedule()
        t, t_max = 10 - 2, 20 - 1 - 2
        expected = 0.5 * (1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + math.cos(math.pi * t / t_max)))
        assert s.lr("body", 10) == pytest.approx(expected, **TOL)

    def test_never_unfrozen_group_never_trains(self):
        s = self.schedule()
        assert not any(s.trainable("stem", step) for step in range(20))

    def test_trainable_groups_per_epoch(self):
        s = self.schedule()
        assert [s.trainable_groups(epoch) for epoch in range(4)] == [
            ["head"], ["head"], ["body", "head"], ["body", "head"]
        ]


class TestLrMinPerGroup:
    def test_floor_is_scaled_by_the_multiplier(self):
        s = analytic_schedule(lr_min=2e-5)
        assert s.group_lr_min("layer4") == pytest.approx(2e-6, **TOL)

    def test_explicit_group_lr_sets_its_multiplier(self):
        groups = (GroupSchedule("body", lr_max=2.5e-4), GroupSchedule("head"))
        s = Schedule(groups=groups, lr_max=1e-3, lr_min=1e-5, epochs=2, steps_per_epoch=3)
        assert s.multiplier("body") == pytest.approx(0.25, **TOL)
        assert s.group_lr_min("body") == pytest.approx(2.5e-6, **TOL)

    def test_ratio_to_the_head_is_constant(self):
        s = analytic_schedule()
        for step in range(40):
            assert s.lr("layer3", step) == pytest.approx(1e-2 * s.lr("head", step), **TOL)


def torch_lrs(schedule: Schedule) -> list[list[float]]:
    """Per-step LRs from torch's LinearLR → CosineAnnealingLR with the same settings."""
    params = [nn.Parameter(torch.zeros(1)) for _ in schedule.group_names]
    optimizer = torch.optim.SGD(
        [{"params": [p], "lr": schedule.group_lr_max(n)} for p, n in zip(params, schedule.group_names)],
        lr=schedule.lr_max,
    )
    warmup = schedule.n_warmup_steps
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=schedule.total_steps - 1 - warmup, eta_min=schedule.lr_min
    )
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=schedule.warmup_start_factor, total_iters=warmup
        )
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
    else:
        scheduler = cosine
    lrs = []
    for _ in range(schedule.total_steps):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


class TestTorchAgreement:
    """torch's eta_min is one absolute floor for all param groups; ours is scaled per group,
    so the definitions coincide for one group, or for several groups with lr_min = 0."""

    @pytest.mark.parametrize("warmup_steps", [0, 1, 7])
    def test_single_group_with_floor(self, warmup_steps):
        s = Schedule(groups=(GroupSchedule("head"),), epochs=3, steps_per_epoch=8, lr_max=3e-3,
                     lr_min=2e-4, warmup_steps=warmup_steps, warmup_start_factor=0.25)
        for step, reference in enumerate(torch_lrs(s)):
            assert s.lr("head", step) == pytest.approx(reference[0], abs=1e-12, rel=1e-9)

    @pytest.mark.parametrize("warmup_steps", [0, 5])
    def test_discriminative_groups_without_floor(self, warmup_steps):
        s = analytic_schedule(lr_min=0.0, warmup_steps=warmup_steps)
        for step, reference in enumerate(torch_lrs(s)):
            ours = [s.lr(name, step) for name in s.group_names]
            assert ours == pytest.approx(reference, abs=1e-12, rel=1e-9)


class TestPresets:
    @pytest.mark.parametrize("preset", PRESETS)
    def test_every_preset_is_valid_and_round_trips(self, preset):
        s = make_preset(preset, IMAGENET_GROUPS, epochs=6, steps_per_epoch=10)
        assert Schedule.from_json(s.to_json()) == s

    def test_feature_extraction_trains_only_the_head(self):
        s = make_preset("feature_extraction", IMAGENET_GROUPS, epochs=3, steps_per_epoch=4)
        assert all(s.trainable_groups(epoch) == ["head"] for epoch in range(3))

    def test_full_finetuning_uses_the_course_adamw_settings(self):
        s = make_preset("full_finetuning", IMAGENET_GROUPS)
        assert (s.optimizer, s.lr_max, s.weight_decay) == ("adamw", 1e-4, 1e-4)

    def test_full_finetuning_trains_everything_from_the_start(self):
        s = make_preset("full_finetuning", IMAGENET_GROUPS)
        assert s.trainable_groups(0) == IMAGENET_GROUPS

    def test_gradual_unfreezing_adds_one_group_per_epoch_from_the_head(self):
        s = make_preset("gradual_unfreezing", IMAGENET_GROUPS, epochs=4)
        assert [s.trainable_groups(epoch) for epoch in range(4)] == [
            ["head"], ["layer4", "head"], ["layer3", "layer4", "head"], ["layer2", "layer3", "layer4", "head"]
        ]

    def test_gradual_unfreezing_leaves_late_groups_frozen(self):
        s = make_preset("gradual_unfreezing", IMAGENET_GROUPS, epochs=4)
        assert (s.group("layer1").unfreeze_epoch, s.group("stem").unfreeze_epoch) == (None, None)

    def test_discriminative_preset_is_the_course_example_exactly(self):
        s = make_preset("frozen_then_discriminative", IMAGENET_GROUPS)
        assert [s.group_lr_max(n) for n in ("head", "layer4", "layer3")] == [1e-3, 1e-4, 1e-5]

    def test_discriminative_preset_freezes_the_first_epoch(self):
        s = make_preset("frozen_then_discriminative", IMAGENET_GROUPS, epochs=3)
        assert (s.trainable_groups(0), s.trainable_groups(1)) == (["head"], IMAGENET_GROUPS)

    def test_backbone_at_epoch_n_with_a_lower_lr(self):
        s = make_preset("backbone_at_epoch", IMAGENET_GROUPS, epochs=5, backbone_epoch=2)
        assert [s.group(n).unfreeze_epoch for n in IMAGENET_GROUPS] == [2, 2, 2, 2, 2, 0]
        assert [s.group_lr_max(n) for n in IMAGENET_GROUPS] == [1e-4] * 5 + [1e-3]

    def test_unknown_preset(self):
        with pytest.raises(LabError) as info:
            make_preset("magic", IMAGENET_GROUPS)
        assert info.value.key == "ft.err_preset"


class TestJson:
    def test_round_trip_keeps_every_field(self):
        s = analytic_schedule(optimizer="sgd", momentum=0.8, frozen_bn="train", no_decay_bn_bias=False,
                              groups=(GroupSchedule("a", None, 2e-4, ("conv1", "bn1")),
                                      GroupSchedule("head", 1, None, ("fc",))))
        assert Schedule.from_json(s.to_json()) == s

    def test_pickle_round_trip(self):
        s = analytic_schedule()
        assert pickle.loads(pickle.dumps(s)) == s

    def test_version_is_stored(self):
        assert json.loads(analytic_schedule().to_json())["version"] == SCHEDULE_VERSION

    def error_key(self, text) -> str:
        with pytest.raises(LabError) as info:
            Schedule.from_json(text)
        return info.value.key

    def test_newer_version(self):
        data = json.loads(analytic_schedule().to_json())
        data["version"] = SCHEDULE_VERSION + 1
        assert self.error_key(json.dumps(data)) == "ft.err_version_newer"

    def test_newer_version_message_names_both_versions(self):
        with pytest.raises(LabError) as info:
            Schedule.from_json(json.dumps({"version": SCHEDULE_VERSION + 1}))
        assert f"format {SCHEDULE_VERSION + 1}" in str(info.value)

    @pytest.mark.parametrize("text", ["{", "", "not json", b"\xff\xfe"])
    def test_malformed(self, text):
        assert self.error_key(text) == "ft.err_json_malformed"

    def test_not_an_object(self):
        assert self.error_key("[1, 2]") == "ft.err_json_not_object"

    def test_missing_version(self):
        assert self.error_key('{"epochs": 3}') == "ft.err_json_no_version"

    def test_unknown_field_is_named(self):
        data = json.loads(analytic_schedule().to_json())
        data["lr_maxx"] = 1
        with pytest.raises(LabError) as info:
            Schedule.from_json(json.dumps(data))
        assert info.value.params["fields"] == "lr_maxx"

    @pytest.mark.parametrize("field, value", [("epochs", "3"), ("epochs", 2.5), ("epochs", True),
                                              ("lr_max", "big"), ("no_decay_bn_bias", 1)])
    def test_wrong_type(self, field, value):
        data = json.loads(analytic_schedule().to_json())
        data[field] = value
        assert self.error_key(json.dumps(data)) == "ft.err_json_field"

    def test_wrong_group_type(self):
        data = json.loads(analytic_schedule().to_json())
        data["groups"][0]["unfreeze_epoch"] = "later"
        assert self.error_key(json.dumps(data)) == "ft.err_json_field"

    def test_invalid_values_are_validated_like_the_ui(self):
        data = json.loads(analytic_schedule().to_json())
        data["lr_min"] = 1.0
        assert self.error_key(json.dumps(data)) == "ft.err_lr_min_above_max"


class TestValidation:
    @pytest.mark.parametrize("changes, key", [
        (dict(lr_min=2e-3), "ft.err_lr_min_above_max"),
        (dict(lr_min=-1e-6), "ft.err_lr_min_above_max"),
        (dict(lr_max=0.0), "ft.err_lr_max"),
        (dict(lr_max=float("nan")), "ft.err_lr_max"),
        (dict(warmup_steps=39), "ft.err_warmup_too_long"),
        (dict(epochs=1, steps_per_epoch=1, warmup_steps=0), "ft.err_too_few_steps"),
        (dict(warmup_steps=0, warmup_epochs=4), "ft.err_warmup_too_long"),
        (dict(warmup_steps=2, warmup_epochs=1), "ft.err_warmup_both"),
        (dict(warmup_steps=-1), "ft.err_warmup_negative"),
        (dict(warmup_start_factor=0.0), "ft.err_warmup_start_factor"),
        (dict(lr_decay=0.0), "ft.err_lr_decay"),
        (dict(lr_decay=2.0), "ft.err_lr_decay"),
        (dict(epochs=0), "ft.err_epochs"),
        (dict(steps_per_epoch=0), "ft.err_steps_per_epoch"),
        (dict(optimizer="adam"), "ft.err_optimizer"),
        (dict(version=SCHEDULE_VERSION + 1), "ft.err_version"),
        (dict(frozen_bn="freeze"), "ft.err_frozen_bn"),
        (dict(momentum=1.0), "ft.err_momentum"),
        (dict(weight_decay=-0.1), "ft.err_weight_decay"),
        (dict(groups=()), "ft.err_no_groups"),
        (dict(groups=(GroupSchedule("a"), GroupSchedule("a"))), "ft.err_duplicate_groups"),
        (dict(groups=(GroupSchedule("a", unfreeze_epoch=4),)), "ft.err_unfreeze_past_end"),
        (dict(groups=(GroupSchedule("a", unfreeze_epoch=-1),)), "ft.err_unfreeze_past_end"),
        (dict(groups=(GroupSchedule("a", unfreeze_epoch=None),)), "ft.err_nothing_trains"),
        (dict(groups=(GroupSchedule("a", lr_max=-1.0), GroupSchedule("head"))), "ft.err_group_lr"),
        (dict(groups=(GroupSchedule("a"), GroupSchedule("head", lr_max=1e-3))), "ft.err_head_lr"),
    ])
    def test_rejected(self, changes, key):
        with pytest.raises(LabError) as info:
            analytic_schedule(**changes)
        assert info.value.key == key

    def test_lr_min_equal_to_lr_max_is_a_constant_lr(self):
        s = analytic_schedule(lr_min=1e-3, warmup_steps=0)
        assert {s.lr("head", step) for step in range(40)} == {1e-3}

    @pytest.mark.parametrize("step", [-1, 40])
    def test_step_outside_the_schedule(self, step):
        with pytest.raises(LabError) as info:
            analytic_schedule().lr("head", step)
        assert info.value.key == "ft.err_step_range"

    def test_unknown_group(self):
        with pytest.raises(LabError) as info:
            analytic_schedule().lr("layer9", 0)
        assert info.value.key == "ft.err_unknown_group"


class TestPreviewSteps:
    def test_short_schedules_keep_every_step(self):
        assert analytic_schedule().preview_steps() == list(range(40))

    def test_long_schedules_are_subsampled_but_keep_analytic_points(self):
        s = analytic_schedule(epochs=30, steps_per_epoch=1000, warmup_steps=1234)
        steps = s.preview_steps(max_points=500)
        assert len(steps) < 600
        assert {0, 1233, 1234, 29_999, 17_000}.issubset(steps)


class TestPreviewData:
    def test_lr_curves_are_none_while_frozen(self):
        s = TestUnfreezing().schedule()
        steps, curves = s.lr_curves()
        assert curves["body"] == [None] * 10 + [s.lr("body", step) for step in range(10, 20)]
        assert steps == list(range(20))

    def test_trainable_parameters_by_epoch(self):
        s = TestUnfreezing().schedule()
        assert s.trainable_parameters_by_epoch({"stem": 7, "body": 100, "head": 3}) == [3, 3, 103, 103]

    def test_resnet18_head_only_count_is_the_fc_layer(self):
        model = build_resnet(imagenet_config(18))
        s = make_preset("feature_extraction", list(default_groups(model)), epochs=2)
        counts = group_parameter_counts(model, s.layer_groups(model))
        assert s.trainable_parameters_by_epoch(counts) == [513_000, 513_000]  # 512 × 1000 + 1000


def cifar_schedule(**changes) -> Schedule:
    names = list(default_groups(tiny_model()))
    values = dict(groups=tuple(GroupSchedule(n, unfreeze_epoch=0 if n == "head" else 1) for n in names),
                  epochs=2, steps_per_epoch=3, lr_max=1e-2, lr_decay=0.1)
    values.update(changes)
    return Schedule(**values)


class TestOptimizer:
    def test_param_groups_named_by_layer_group(self):
        model = tiny_model()
        s = cifar_schedule()
        optimizer = s.build_optimizer(model, s.group_params(model))
        names = [(g["name"], g["no_decay"]) for g in optimizer.param_groups]
        assert names == [(n, flag) for n in s.group_names for flag in (False, True)]

    def test_no_decay_is_batch_norm_and_biases(self):
        model = tiny_model()
        s = cifar_schedule(weight_decay=5e-4)
        optimizer = s.build_optimizer(model, s.group_params(model))
        exempt = {id(p) for g in optimizer.param_groups if g["no_decay"] for p in g["params"]}
        expected = {id(p) for name, p in model.named_parameters() if "bn" in name or name.endswith("bias")}
        assert exempt == expected

    def test_weight_decay_values(self):
        model = tiny_model()
        s = cifar_schedule(weight_decay=5e-4)
        optimizer = s.build_optimizer(model, s.group_params(model))
        assert {(g["no_decay"], g["weight_decay"]) for g in optimizer.param_groups} == {(False, 5e-4), (True, 0.0)}

    def test_without_the_exemption_everything_decays(self):
        model = tiny_model()
        s = cifar_schedule(no_decay_bn_bias=False)
        optimizer = s.build_optimizer(model, s.group_params(model))
        assert len(optimizer.param_groups) == len(s.group_names)

    def test_every_parameter_is_in_the_optimizer_once(self):
        model = tiny_model()
        s = cifar_schedule()
        optimizer = s.build_optimizer(model, s.group_params(model))
        ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters())

    @pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
    def test_optimizer_kind(self, name, kind):
        model = tiny_model()
        s = cifar_schedule(optimizer=name)
        assert isinstance(s.build_optimizer(model, s.group_params(model)), kind)

    def test_sgd_momentum(self):
        model = tiny_model()
        s = cifar_schedule(optimizer="sgd", momentum=0.85)
        optimizer = s.build_optimizer(model, s.group_params(model))
        assert {g["momentum"] for g in optimizer.param_groups} == {0.85}

    def test_mismatched_groups_are_rejected(self):
        model = tiny_model()
        s = analytic_schedule()  # ImageNet groups; the CIFAR model has no layer4
        with pytest.raises(LabError) as info:
            s.build_optimizer(model, {"stem": [], "head": []})
        assert info.value.key == "ft.err_groups_mismatch"

    def test_apply_sets_lrs_flags_and_frozen_bn_mode(self):
        model = tiny_model()
        s = cifar_schedule()
        groups_params = s.group_params(model)
        optimizer = s.build_optimizer(model, groups_params)
        model.train()
        s.apply(0, model, optimizer, groups_params)
        assert [g["lr"] for g in optimizer.param_groups] == [s.lr(g["name"], 0) for g in optimizer.param_groups]
        assert [p.requires_grad for n, p in model.named_parameters()] == [n.startswith("fc") for n, _ in model.named_parameters()]
        assert not model.bn1.training
        assert not model.layer1[0].bn1.training

    def test_unfrozen_batch_norm_trains_again(self):
        model = tiny_model()
        s = cifar_schedule()
        groups_params = s.group_params(model)
        optimizer = s.build_optimizer(model, groups_params)
        model.train()
        s.apply(0, model, optimizer, groups_params)
        s.apply(3, model, optimizer, groups_params)
        assert all(m.training for m in model.modules())

    def test_apply_follows_a_regrouping_of_the_same_model(self):
        model = tiny_model()
        s = cifar_schedule()
        groups_params = s.group_params(model)
        optimizer = s.build_optimizer(model, groups_params)
        model.train()
        s.apply(0, model, optimizer, groups_params)
        moved = {**groups_params, "head": groups_params["head"] + groups_params["layer3"], "layer3": []}
        s.apply(0, model, optimizer, moved)
        assert model.layer3[0].bn1.training

    def test_frozen_bn_train_mode_leaves_batch_norm_training(self):
        model = tiny_model()
        s = cifar_schedule(frozen_bn="train")
        groups_params = s.group_params(model)
        optimizer = s.build_optimizer(model, groups_params)
        model.train()
        s.apply(0, model, optimizer, groups_params)
        assert model.bn1.training and not model.bn1.weight.requires_grad


class TestRegrouping:
    def test_custom_modules_regroup_the_layers(self):
        model = tiny_model()
        groups = (GroupSchedule("early", modules=("conv1", "bn1", "layer1")),
                  GroupSchedule("late", modules=("layer2", "layer3")),
                  GroupSchedule("head"))
        s = Schedule(groups=groups, epochs=2, steps_per_epoch=2)
        params = s.group_params(model)
        assert params["early"][0] == "conv1.weight"
        assert params["late"][0].startswith("layer2.")

    def test_overlapping_groups_name_the_parameters(self):
        model = tiny_model()
        groups = (GroupSchedule("a", modules=("conv1", "bn1", "layer1", "layer2")),
                  GroupSchedule("b", modules=("layer2", "layer3")), GroupSchedule("head"))
        with pytest.raises(LabError) as info:
            Schedule(groups=groups, epochs=2, steps_per_epoch=2).group_params(model)
        assert info.value.key == "errors.groups_overlap"
        assert "layer2.0.conv1.weight" in info.value.params["names"]

    def test_orphans_are_named(self):
        model = tiny_model()
        groups = (GroupSchedule("a", modules=("conv1", "bn1", "layer1", "layer2")), GroupSchedule("head"))
        with pytest.raises(LabError) as info:
            Schedule(groups=groups, epochs=2, steps_per_epoch=2).group_params(model)
        assert info.value.key == "errors.groups_orphans"
        assert "layer3.0.conv1.weight" in info.value.params["names"]

    def test_unknown_group_without_modules(self):
        model = tiny_model()
        s = Schedule(groups=(GroupSchedule("body"), GroupSchedule("head")), epochs=2, steps_per_epoch=2)
        with pytest.raises(LabError) as info:
            s.group_params(model)
        assert info.value.key == "ft.err_group_no_modules"
