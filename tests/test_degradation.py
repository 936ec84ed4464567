"""The degradation demo: config, plan, the job through the real store and worker path, and the
ordering of final training losses it exists to show.

The quick preset (20 against 56 layers) costs about 80 CPU-seconds, too long for the suite. So
the ordering is pinned on the smallest configuration found to show it: CIFAR-8 against CIFAR-32
on the 8×8 digits, 3 epochs at batch 32, about 30 CPU-seconds. Measured final training losses:
plain-8 0.019, plain-32 1.40, residual-8 0.012, residual-32 0.024.
"""

import json
import math
import os

import pytest
import torch

from core import jobs
from core.degradation import (
    RESULT_FILE,
    DegradationConfig,
    degradation_facts,
    plan,
    preset_config,
    run_job,
    series_name,
)
from core.errors import LabError
from core.worker import execute

TINY = DegradationConfig(depths=(8, 14), epochs=1, batch_size=16, max_per_class=12, warmup_steps=1)
TINY_TRAIN_COUNT = 100  # 10 classes × (12 − round(12 × 0.2)) digits
TINY_STEPS = TINY_TRAIN_COUNT // 16  # per network: one epoch of full batches
SERIES = ["plain-8", "plain-14", "residual-8", "residual-14"]


@pytest.fixture
def store(tmp_path):
    return jobs.Store(tmp_path / "runs")


def _run_in_process(store, config: DegradationConfig) -> str:
    run_id = store.submit("degradation", config.to_dict(), device="cpu")
    status = execute(store, store.claim_next("cpu", os.getpid()))
    assert status == jobs.DONE, store.get(run_id).message_key
    return run_id


def _summary(store, run_id) -> dict:
    return json.loads((store.run_dir(run_id) / RESULT_FILE).read_text(encoding="utf-8"))


class TestConfig:
    def test_round_trip(self):
        config = preset_config("full")
        assert DegradationConfig.from_dict(config.to_dict()) == config

    def test_quick_preset_is_the_default(self):
        assert preset_config("quick") == DegradationConfig()
        assert preset_config("quick").depths == (20, 56)

    @pytest.mark.parametrize("data, key", [
        ({"depths": [56, 20]}, "grad.err_depths"),
        ({"depths": [20]}, "grad.err_depths"),
        ({"depths": [20, 21]}, "errors.cifar_depth"),
        ({"epochs": 0}, "grad.err_epochs"),
        ({"lr_max": -1.0}, "grad.err_lr"),
        ({"learning_rate": 0.1}, "grad.err_unknown_fields"),
    ])
    def test_invalid_configs_name_the_problem(self, data, key):
        with pytest.raises(LabError) as error:
            DegradationConfig.from_dict(data)
        assert error.value.key == key

    def test_unknown_preset(self):
        with pytest.raises(LabError):
            preset_config("huge")


class TestPlan:
    def test_order_and_offsets(self):
        networks = plan(DegradationConfig(depths=(20, 56), epochs=3, batch_size=32), train_count=1437)
        per_network = 1437 // 32 * 3
        assert [n.series for n in networks] == ["plain-20", "plain-56", "residual-20", "residual-56"]
        assert [n.step_offset for n in networks] == [0, per_network, 2 * per_network, 3 * per_network]
        assert [n.variant for n in networks] == ["plain", "plain", "residual", "residual"]


class TestFacts:
    def _results(self, plain_shallow, plain_deep, residual_shallow, residual_deep):
        values = {"plain-20": plain_shallow, "plain-56": plain_deep, "residual-20": residual_shallow,
                  "residual-56": residual_deep}
        return {name: {"train_loss": value} for name, value in values.items()}

    def test_close_residual(self):
        facts = degradation_facts(self._results(0.04, 1.94, 0.004, 0.009), (20, 56))
        assert facts == {"plain_degrades": "yes", "residual_beats_plain": "yes", "residual_no_degradation": "close"}

    def test_better_residual(self):
        facts = degradation_facts(self._results(0.04, 1.94, 0.01, 0.005), (20, 56))
        assert facts["residual_no_degradation"] == "better"

    def test_gap_beyond_a_tenth_of_the_plain_gap(self):
        # plain gap 1.0, residual gap 0.2 > 0.1.
        facts = degradation_facts(self._results(0.5, 1.5, 0.1, 0.3), (20, 56))
        assert facts["residual_no_degradation"] == "no"

    def test_unfinished_networks_give_no_fact(self):
        results = self._results(0.04, 1.94, 0.004, 0.009)
        del results["residual-56"]["train_loss"]
        assert degradation_facts(results, (20, 56)) == {"plain_degrades": "yes"}


class TestJob:
    def test_trains_four_networks_through_the_engine(self, store):
        run_id = _run_in_process(store, TINY)
        summary = _summary(store, run_id)
        assert list(summary["networks"]) == SERIES
        assert [entry["series"] for entry in summary["plan"]] == SERIES
        for entry in summary["networks"].values():
            assert entry["stop_reason"] == "completed"
            assert math.isfinite(entry["train_loss"])
            assert math.isfinite(entry["last_epoch_loss"])

        metrics = store.metrics(run_id)
        for index, series in enumerate(SERIES):
            rows = metrics[metrics["series"] == series]
            offset = index * TINY_STEPS
            assert rows["step"].tolist() == list(range(offset, offset + TINY_STEPS))
            assert "grad_norm/stem" in rows.columns  # written by the engine's fit, the one loop
            assert len(metrics[metrics["series"] == f"{series}/val"]) == 1

        run = store.get(run_id)
        assert run.progress_done == run.progress_total == 4 * TINY_STEPS

    def test_cancel_stops_before_the_next_network(self, store):
        run_id = store.submit("degradation", TINY.to_dict(), device="cpu")
        run = store.claim_next("cpu", os.getpid())
        (store.run_dir(run_id) / jobs.CANCEL_FILE).touch()
        assert execute(store, run) == jobs.CANCELLED
        networks = _summary(store, run_id)["networks"]
        assert list(networks) == ["plain-8"]
        assert networks["plain-8"]["stop_reason"] == "cancelled"

    def test_resume_retrains_only_unfinished_networks(self, store):
        run_id = _run_in_process(store, TINY)
        path = store.run_dir(run_id) / RESULT_FILE
        summary = json.loads(path.read_text(encoding="utf-8"))
        kept_loss = summary["networks"]["plain-8"]["train_loss"]
        del summary["networks"]["residual-14"]
        path.write_text(json.dumps(summary), encoding="utf-8")
        before = store.metrics(run_id)

        context = jobs.JobContext(run_id=run_id, run_dir=store.run_dir(run_id), device=torch.device("cpu"),
                                  store=store, resuming=True)
        run_job(TINY.to_dict(), context)
        context.flush()

        after = store.metrics(run_id)
        for series in SERIES[:3]:
            assert after[after["series"] == series]["time"].tolist() == before[before["series"] == series]["time"].tolist()
        assert len(after[after["series"] == "residual-14"]) == TINY_STEPS
        resumed = _summary(store, run_id)["networks"]
        assert resumed["plain-8"]["train_loss"] == kept_loss
        assert resumed["residual-14"]["stop_reason"] == "completed"


def test_deeper_plain_degrades_deeper_residual_does_not(store):
    """He et al. 2016, Fig. 1 vs Fig. 4, on the lab's networks and the embedded digits."""
    config = DegradationConfig(depths=(8, 32), epochs=3, batch_size=32, lr_max=0.05, warmup_steps=20)
    run_id = _run_in_process(store, config)
    networks = _summary(store, run_id)["networks"]
    loss = {name: entry["train_loss"] for name, entry in networks.items()}

    assert loss[series_name("plain", 32)] > 10 * loss[series_name("plain", 8)]  # measured 1.40 vs 0.019
    assert loss[series_name("plain", 32)] > 0.5  # far from trained; chance level is ln 10 = 2.30
    assert loss[series_name("residual", 32)] < 0.1  # measured 0.024
    assert degradation_facts(networks, (8, 32)) == {
        "plain_degrades": "yes", "residual_beats_plain": "yes", "residual_no_degradation": "close"}
