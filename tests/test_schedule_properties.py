"""Properties of every valid schedule, over random schedules drawn by hypothesis."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from core.schedule import GroupSchedule, Schedule

SETTINGS = settings(max_examples=80, deadline=None)


@st.composite
def schedules(draw) -> Schedule:
    epochs = draw(st.integers(1, 6))
    steps_per_epoch = draw(st.integers(2 if epochs == 1 else 1, 12))
    total = epochs * steps_per_epoch
    lr_max = draw(st.floats(1e-6, 1.0))
    lr_min = lr_max * draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]) | st.floats(0.0, 1.0))

    warmup_kind = draw(st.sampled_from(["none", "steps", "epochs"]))
    warmup_steps = draw(st.integers(1, total - 2)) if warmup_kind == "steps" and total > 2 else 0
    max_warmup_epochs = (total - 2) // steps_per_epoch
    warmup_epochs = draw(st.integers(1, max_warmup_epochs)) if warmup_kind == "epochs" and max_warmup_epochs else 0

    n_groups = draw(st.integers(1, 6))
    unfreeze = st.none() | st.integers(0, epochs - 1)
    explicit_lr = st.none() | st.floats(1e-7, 1.0)
    groups = [GroupSchedule(f"g{i}", draw(unfreeze), draw(explicit_lr)) for i in range(n_groups - 1)]
    head_unfreeze = 0 if all(g.unfreeze_epoch is None for g in groups) else draw(unfreeze)
    groups.append(GroupSchedule("head", head_unfreeze))

    return Schedule(
        groups=tuple(groups),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        optimizer=draw(st.sampled_from(["adamw", "sgd"])),
        lr_max=lr_max,
        lr_min=lr_min,
        lr_decay=draw(st.floats(0.01, 1.0)),
        warmup_steps=warmup_steps,
        warmup_epochs=warmup_epochs,
        warmup_start_factor=draw(st.floats(1e-3, 1.0)),
        weight_decay=draw(st.floats(0.0, 0.1)),
        no_decay_bn_bias=draw(st.booleans()),
        frozen_bn=draw(st.sampled_from(["eval", "train"])),
    )


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


@SETTINGS
@given(schedules())
def test_json_round_trip_is_identity(s):
    assert Schedule.from_json(s.to_json()) == s


@SETTINGS
@given(schedules())
def test_frozen_groups_have_zero_lr(s):
    for name in s.group_names:
        for step in range(s.total_steps):
            assert s.trainable(name, step) or s.lr(name, step) == 0.0


@SETTINGS
@given(schedules())
def test_lr_stays_between_the_group_floor_and_peak(s):
    for name in s.group_names:
        lo, hi = s.group_lr_min(name), s.group_lr_max(name)
        for step in range(s.total_steps):
            lr = s.scheduled_lr(name, step)
            assert lr <= hi * (1 + 1e-12)
            assert lr >= min(lo, hi * s.warmup_start_factor) * (1 - 1e-12)


@SETTINGS
@given(schedules())
def test_every_trainable_step_but_the_last_learns(s):
    for name in s.group_names:
        for step in range(s.total_steps - 1):
            assert not s.trainable(name, step) or s.lr(name, step) > 0


@SETTINGS
@given(schedules())
def test_first_step_value(s):
    expected_factor = s.warmup_start_factor if s.n_warmup_steps else 1.0
    assert close(s.scheduled_lr("head", 0), expected_factor * s.lr_max)


@SETTINGS
@given(schedules())
def test_last_step_is_exactly_the_group_floor(s):
    last = s.total_steps - 1
    for name in s.group_names:
        assert s.scheduled_lr(name, last) == s.group_lr_min(name)


@SETTINGS
@given(schedules())
def test_warmup_rises_and_cosine_falls(s):
    warmup = s.n_warmup_steps
    for name in s.group_names:
        values = [s.scheduled_lr(name, step) for step in range(s.total_steps)]
        rising, falling = values[: warmup + 1], values[warmup:]
        assert all(a <= b * (1 + 1e-12) for a, b in zip(rising, rising[1:]))
        assert all(a >= b * (1 - 1e-12) for a, b in zip(falling, falling[1:]))


@SETTINGS
@given(schedules())
def test_every_group_is_the_head_curve_times_its_multiplier(s):
    for name in s.group_names:
        m = s.multiplier(name)
        for step in range(s.total_steps):
            assert close(s.scheduled_lr(name, step), m * s.scheduled_lr("head", step))


@SETTINGS
@given(schedules())
def test_once_trainable_always_trainable(s):
    for name in s.group_names:
        flags = [s.trainable(name, step) for step in range(s.total_steps)]
        assert flags == sorted(flags)


@SETTINGS
@given(schedules())
def test_zero_warmup_equals_plain_cosine(s):
    s = s.replace(warmup_steps=0, warmup_epochs=0)
    t_max = s.total_steps - 1
    for name in s.group_names:
        lo, hi = s.group_lr_min(name), s.group_lr_max(name)
        for step in range(s.total_steps):
            cosine = lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * step / t_max))
            assert close(s.scheduled_lr(name, step), cosine)
