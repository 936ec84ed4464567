"""The LR finder: the pure sweep, smoothing and suggestion logic with exact values, the sweep
through the engine's TrainStep (relative LRs, frozen groups), and the "lr_find" job end to end
on a real run store."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from core import jobs
from core.engine import EpochBatches, TrainStep
from core.errors import LabError
from core.groups import default_groups
from core.jobs import JobContext, Store
from core.lr_finder import (
    METHOD_MIN_DIV_10,
    METHOD_NONE,
    METHOD_STEEPEST,
    RESULT_FILE,
    SERIES,
    STOP_COMPLETED,
    STOP_DIVERGED,
    STOP_NON_FINITE,
    FinderConfig,
    diverged,
    run_job,
    smooth,
    suggest,
    sweep,
    sweep_lrs,
)
from core.models import build_resnet, cifar_config
from core.schedule import GroupSchedule, Schedule

TINY = cifar_config(8, base_width=4, num_classes=3, input_size=16)


class TestSweepLrs:
    def test_endpoints(self):
        lrs = sweep_lrs(1e-6, 1.0, 61)
        assert (lrs[0], lrs[-1]) == (1e-6, pytest.approx(1.0, rel=1e-12))

    def test_constant_ratio_between_steps(self):
        lrs = sweep_lrs(1e-5, 1e-1, 41)
        ratios = [b / a for a, b in zip(lrs, lrs[1:])]
        assert ratios == pytest.approx([10 ** 0.1] * 40, rel=1e-12)

    def test_one_decade_per_ten_steps(self):
        assert sweep_lrs(1e-4, 1e-2, 21)[10] == pytest.approx(1e-3, rel=1e-12)


class TestSmooth:
    def test_first_value_is_the_loss_itself(self):
        assert smooth([2.5], 0.98) == [pytest.approx(2.5, rel=1e-12)]

    def test_two_values_by_hand(self):
        # avg1 = 0.1·4 = 0.4 → 0.4/0.1 = 4; avg2 = 0.9·0.4 + 0.1·2 = 0.56 → 0.56/0.19
        assert smooth([4.0, 2.0], 0.9) == pytest.approx([4.0, 0.56 / 0.19], rel=1e-12)

    def test_constant_loss_stays_constant(self):
        assert smooth([1.7] * 50, 0.98) == pytest.approx([1.7] * 50, rel=1e-12)

    def test_beta_zero_is_no_smoothing(self):
        assert smooth([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]


class TestDiverged:
    def test_above_factor_times_minimum(self):
        assert diverged([2.0, 1.0, 4.1], 4.0)

    def test_at_factor_is_not_yet(self):
        assert not diverged([2.0, 1.0, 4.0], 4.0)

    def test_single_point_never(self):
        assert not diverged([10.0], 4.0)


def curve(x0: float = -4.0, n: int = 101) -> tuple[list[float], list[float]]:
    """A synthetic sweep: loss = 2 − tanh(2(x − x0)) + exp(3x), x = log10(lr) from −7 to 1.
    Its steepest descent is at x0 (where tanh is steepest; the exponential adds < 2e-5 slope
    there), its minimum later, then it explodes."""
    x = np.linspace(-7, 1, n)
    loss = 2 - np.tanh(2 * (x - x0)) + np.exp(3 * x)
    return list(10 ** x), list(loss)


class TestSuggest:
    @pytest.mark.parametrize("x0", [-5.0, -4.0, -3.2])
    def test_steepest_descent_on_an_analytic_curve(self, x0):
        lrs, loss = curve(x0)
        s = suggest(lrs, loss)
        assert s.method == METHOD_STEEPEST
        assert math.log10(s.lr) == pytest.approx(x0, abs=0.08 + 1e-9)  # one grid step is 0.08

    def test_both_candidates_are_reported(self):
        lrs, loss = curve()
        s = suggest(lrs, loss)
        best = int(np.argmin(loss))
        assert (s.lr_min_loss, s.lr_min_div_10) == (lrs[best], lrs[best] / 10)

    def test_short_descent_falls_back_to_min_over_ten(self):
        lrs = sweep_lrs(1e-5, 1e-1, 20)  # burn-in: 2 points
        loss = [5.0, 4.0, 3.0, 1.0] + [1.0 + i for i in range(1, 17)]  # minimum at index 3
        s = suggest(lrs, loss)
        assert (s.method, s.lr) == (METHOD_MIN_DIV_10, pytest.approx(lrs[3] / 10, rel=1e-12))

    def test_loss_rising_from_the_start_gives_no_suggestion(self):
        lrs = sweep_lrs(1e-3, 10.0, 30)
        s = suggest(lrs, [1.0 + i for i in range(30)])
        assert (s.method, s.lr) == (METHOD_NONE, None)

    def test_too_few_points(self):
        assert suggest([1e-3], [1.0]).method == METHOD_NONE


class TestConfig:
    @pytest.mark.parametrize("changes, key", [
        (dict(lr_start=1.0, lr_end=1e-3), "ft.err_finder_range"),
        (dict(lr_start=0.0), "ft.err_finder_range"),
        (dict(num_steps=5), "ft.err_finder_steps"),
        (dict(num_steps=10_000), "ft.err_finder_steps"),
        (dict(beta=1.0), "ft.err_finder_beta"),
        (dict(diverge_factor=1.0), "ft.err_finder_diverge"),
        (dict(at_epoch=-1), "ft.err_finder_epoch"),
    ])
    def test_rejected(self, changes, key):
        with pytest.raises(LabError) as info:
            FinderConfig(**changes)
        assert info.value.key == key

    def test_round_trip(self):
        config = FinderConfig(lr_start=1e-6, num_steps=40, at_epoch=2)
        assert FinderConfig.from_dict(config.to_dict()) == config

    def test_unknown_field(self):
        with pytest.raises(LabError) as info:
            FinderConfig.from_dict({"steps": 3})
        assert info.value.params["fields"] == "steps"


class RecordingContext:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict, str]] = []

    def log_metrics(self, step, metrics, series="train"):
        self.rows.append((step, metrics, series))

    def set_progress(self, done, total):
        pass

    def should_stop(self):
        return False


def tiny_setup(schedule_groups):
    torch.manual_seed(0)
    model = build_resnet(TINY, seed=0)
    schedule = Schedule(groups=schedule_groups, epochs=3, steps_per_epoch=2, lr_max=1e-3, lr_decay=0.1)
    groups_params = schedule.group_params(model)
    optimizer = schedule.build_optimizer(model, groups_params)
    step_fn = TrainStep(model, optimizer, groups_params, torch.device("cpu"), amp=False, channels_last=False)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 16, 16, generator=generator), torch.randint(0, 3, (8,), generator=generator))
    return model, schedule, groups_params, optimizer, step_fn, EpochBatches(data, 4, shuffle=True)


class TestSweepThroughTheEngineStep:
    GROUPS = (GroupSchedule("stem", None), GroupSchedule("layer1", None), GroupSchedule("layer2", 1),
              GroupSchedule("layer3", 0), GroupSchedule("head", 0))

    def run(self, finder):
        model, schedule, groups_params, optimizer, step_fn, batches = tiny_setup(self.GROUPS)
        seen = []
        model.register_forward_pre_hook(lambda module, inputs: seen.append(
            ({g["name"]: g["lr"] for g in optimizer.param_groups},
             {n: p.requires_grad for n, p in module.named_parameters()})))
        result = sweep(model, schedule, optimizer, groups_params, step_fn, batches, finder, RecordingContext())
        return result, seen, groups_params

    def test_groups_keep_their_relative_lrs(self):
        result, seen, _ = self.run(FinderConfig(lr_start=1e-5, lr_end=1e-2, num_steps=12))
        for lr, (lrs, _) in zip(result["lrs"], seen):
            assert lrs == pytest.approx({"stem": 0.0, "layer1": 0.0, "layer2": 0.0, "layer3": 0.1 * lr, "head": lr},
                                        rel=1e-12)

    def test_frozen_groups_at_the_chosen_epoch_do_not_train(self):
        _, seen, groups_params = self.run(FinderConfig(lr_start=1e-5, lr_end=1e-2, num_steps=10))
        trainable = set(groups_params["layer3"]) | set(groups_params["head"])
        assert all(flags == {n: n in trainable for n in flags} for _, flags in seen)

    def test_later_epoch_includes_the_groups_unfrozen_by_then(self):
        result, seen, _ = self.run(FinderConfig(lr_start=1e-5, lr_end=1e-2, num_steps=10, at_epoch=1))
        assert seen[0][0]["layer2"] == pytest.approx(0.01 * result["lrs"][0], rel=1e-12)

    def test_full_sweep_logs_every_step(self):
        result, _, _ = self.run(FinderConfig(lr_start=1e-5, lr_end=1e-3, num_steps=10, diverge_factor=100))
        assert (result["stop_reason"], len(result["lrs"])) == (STOP_COMPLETED, 10)

    def test_smoothed_values_equal_the_pure_function(self):
        result, _, _ = self.run(FinderConfig(lr_start=1e-5, lr_end=1e-3, num_steps=10, diverge_factor=100))
        assert result["smoothed"] == pytest.approx(smooth(result["losses"], 0.98), rel=1e-12)

    def test_exploding_loss_stops_early(self):
        result, _, _ = self.run(FinderConfig(lr_start=1e-2, lr_end=1e6, num_steps=200))
        assert result["stop_reason"] in (STOP_DIVERGED, STOP_NON_FINITE)
        assert len(result["lrs"]) < 200


def lr_find_config(**finder) -> dict:
    model = build_resnet(TINY)
    schedule = Schedule(groups=tuple(GroupSchedule(n, 0 if n == "head" else None) for n in default_groups(model)),
                        epochs=2, steps_per_epoch=1, lr_max=1e-3)
    return {
        "architecture": TINY.to_dict(),
        "schedule": schedule.to_dict(),
        "data": {"source": "digits", "max_per_class": 6, "classes": ["0", "1", "2"]},
        "weights": {"kind": "none"},
        "train": {"batch_size": 6, "amp": False, "channels_last": False},
        "lr_find": {"lr_start": 1e-5, "lr_end": 10.0, "num_steps": 30, **finder},
    }


@pytest.fixture
def finished_job(tmp_path):
    store = Store(tmp_path / "runs")
    config = lr_find_config()
    run_id = store.submit("lr_find", config)
    ctx = JobContext(run_id, store.run_dir(run_id), torch.device("cpu"), store=store)
    run_job(config, ctx)
    ctx.flush()
    return store, run_id


class TestJob:
    def test_kind_is_registered(self):
        assert jobs.JOB_KINDS["lr_find"] == "core.lr_finder:run_job"

    def test_metrics_are_stored_per_step(self, finished_job):
        store, run_id = finished_job
        frame = store.metrics(run_id, series=SERIES)
        result = json.loads((store.run_dir(run_id) / RESULT_FILE).read_text())
        assert len(frame) == len(result["lrs"]) > 0

    def test_result_file_holds_the_curve_and_the_suggestion(self, finished_job):
        store, run_id = finished_job
        result = json.loads((store.run_dir(run_id) / RESULT_FILE).read_text())
        assert set(result["suggestion"]) >= {"lr", "method", "lr_min_loss", "lr_min_div_10"}
        assert result["suggestion"] == suggest(result["lrs"], result["smoothed"]).to_dict()

    def test_sweep_goes_up_geometrically(self, finished_job):
        store, run_id = finished_job
        result = json.loads((store.run_dir(run_id) / RESULT_FILE).read_text())
        assert result["lrs"] == pytest.approx(sweep_lrs(1e-5, 10.0, 30)[: len(result["lrs"])], rel=1e-12)

    def test_epoch_past_the_schedule_is_refused(self, tmp_path):
        store = Store(tmp_path / "runs")
        config = lr_find_config(at_epoch=5)
        run_id = store.submit("lr_find", config)
        with pytest.raises(LabError) as info:
            run_job(config, JobContext(run_id, store.run_dir(run_id), torch.device("cpu"), store=store))
        assert (info.value.key, info.value.params["last"]) == ("ft.err_finder_epoch", 1)
