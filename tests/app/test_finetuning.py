"""Fine-tuning page under AppTest, in both languages: defaults, every preset, invalid input that
keeps the last valid schedule, JSON upload round trip and bad files, and the LR finder."""

import json
import time

import pytest
import torch

from core import jobs
from core.groups import default_groups
from core.jobs import DONE, JobContext, Store
from core.lr_finder import RESULT_FILE, SERIES, smooth, suggest, sweep_lrs
from core.models import build_resnet, cifar_config
from core.schedule import PRESETS, SCHEDULE_VERSION, Schedule, make_preset
from tests.app.conftest import open_page

PAGE = "pages/finetuning.py"
RESNET18_GROUPS = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
TINY = cifar_config(8, base_width=4)


def stored(at) -> Schedule:
    return Schedule.from_json(at.session_state["schedule_json"])


def errors(at) -> list[str]:
    return [error.value for error in at.error]


def metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def opened(lang: str = "es", **session):
    at = open_page(PAGE, lang=lang, **session)
    at.run()
    assert not at.exception
    return at


@pytest.mark.parametrize("lang, title, label", [("es", "Fine-tuning", "Parámetros entrenables al inicio"),
                                                ("en", "Fine-tuning", "Trainable parameters at the start")])
def test_default_page_shows_the_discriminative_preset_for_resnet18(lang, title, label):
    at = opened(lang)
    assert at.title[0].value == title
    assert errors(at) == []
    assert metrics(at)[label] == "513,000"  # the fc head of ResNet-18: 512 × 1000 + 1000
    assert stored(at) == make_preset("frozen_then_discriminative", RESNET18_GROUPS)


@pytest.mark.parametrize("lang", ["es", "en"])
def test_preview_has_the_three_charts_and_the_group_table(lang):
    at = opened(lang)
    assert len(at.get("plotly_chart")) == 3
    table = next(frame.value for frame in at.dataframe if "Tensors" in frame.value.columns or "Tensores" in frame.value.columns)
    assert list(table.iloc[:, 0]) == RESNET18_GROUPS
    assert "11,689,512" in metrics(at).values()


def test_chart_legend_names_every_group():
    at = opened("en")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [trace["name"] for trace in figure["data"]] == RESNET18_GROUPS


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_is_applied_and_stored(preset):
    at = opened("es")
    at.selectbox(key="ft_preset").set_value(preset)
    at.number_input(key="ft_epochs").set_value(6)
    at.run()
    if preset == "backbone_at_epoch":  # N is only enabled for this preset
        at.number_input(key="ft_backbone_epoch").set_value(2)
    at.button(key="ft_apply_preset").click()
    at.run()
    assert not at.exception
    assert errors(at) == []
    expected = make_preset(preset, RESNET18_GROUPS, epochs=6, steps_per_epoch=100, backbone_epoch=2)
    assert stored(at) == expected


def test_preset_in_english_shows_its_description():
    at = opened("en")
    at.selectbox(key="ft_preset").set_value("gradual_unfreezing")
    at.run()
    assert any("one more group unfreezes" in caption.value for caption in at.caption)


def test_controls_change_the_stored_schedule():
    at = opened("es")
    at.number_input(key="ft_lr_max").set_value(3e-4)
    at.radio(key="ft_warmup_unit").set_value("epochs")
    at.number_input(key="ft_warmup").set_value(1)
    at.radio(key="ft_optimizer").set_value("sgd")
    at.run()
    schedule = stored(at)
    assert (schedule.lr_max, schedule.warmup_epochs, schedule.n_warmup_steps, schedule.optimizer) == (
        3e-4, 1, 100, "sgd")


@pytest.mark.parametrize("lang, fragment", [("es", "debe estar entre 0 y la LR máxima"),
                                            ("en", "must be between 0 and the peak LR")])
def test_lr_min_above_lr_max_keeps_the_last_valid_schedule(lang, fragment):
    at = opened(lang)
    before = at.session_state["schedule_json"]
    at.number_input(key="ft_lr_min").set_value(0.5)
    at.run()
    assert not at.exception
    assert any(fragment in message for message in errors(at))
    assert at.session_state["schedule_json"] == before
    assert at.number_input(key="ft_lr_min").value == 0.5  # the user's value is not thrown away


def test_warmup_longer_than_training():
    at = opened("en")
    before = at.session_state["schedule_json"]
    at.number_input(key="ft_warmup").set_value(600)
    at.run()
    assert any("too long for a run of 500 steps" in message for message in errors(at))
    assert at.session_state["schedule_json"] == before


def test_unfreeze_epoch_past_the_end_after_shortening_the_run():
    at = opened("en")
    at.selectbox(key="ft_preset").set_value("gradual_unfreezing")
    at.run()
    at.button(key="ft_apply_preset").click()
    at.run()
    before = at.session_state["schedule_json"]
    at.number_input(key="ft_epochs").set_value(2)
    at.run()
    assert any("Group layer1 unfreezes at epoch 4, but the run has 2 epochs (0 to 1)" in message for message in errors(at))
    assert at.session_state["schedule_json"] == before


def upload(at, content: bytes):
    at.file_uploader(key="ft_upload").set_value(("schedule.json", content, "application/json"))
    at.run()
    assert not at.exception
    return at


@pytest.mark.parametrize("lang", ["es", "en"])
def test_json_round_trip_through_download_and_upload(lang):
    at = opened(lang)
    changed = stored(at).replace(lr_max=2.5e-4, lr_min=1e-6, warmup_steps=30, optimizer="sgd", momentum=0.85)
    upload(at, changed.to_json().encode())
    assert errors(at) == []
    assert stored(at) == changed
    assert at.number_input(key="ft_lr_max").value == 2.5e-4
    assert at.download_button(key="ft_download").label in ("Descargar el plan (JSON)", "Download the schedule (JSON)")


@pytest.mark.parametrize("lang, fragment", [("es", "no es JSON válido"), ("en", "is not valid JSON")])
def test_malformed_json_keeps_everything(lang, fragment):
    at = opened(lang)
    before = at.session_state["schedule_json"]
    upload(at, b'{"version": 1, "epochs": ')
    assert any(fragment in message for message in errors(at))
    assert at.session_state["schedule_json"] == before


def test_newer_version_is_refused_with_both_versions():
    at = opened("en")
    data = json.loads(at.session_state["schedule_json"])
    data["version"] = SCHEDULE_VERSION + 1
    before = at.session_state["schedule_json"]
    upload(at, json.dumps(data).encode())
    assert any(f"format {SCHEDULE_VERSION + 1}" in message for message in errors(at))
    assert any(f"reads format {SCHEDULE_VERSION}" in message for message in errors(at))
    assert at.session_state["schedule_json"] == before


def test_schedule_for_other_groups_is_refused():
    at = opened("en")
    cifar_schedule = make_preset("feature_extraction", ["stem", "layer1", "layer2", "layer3", "x", "head"])
    upload(at, cifar_schedule.to_json().encode())
    assert any("not one of the default groups" in message for message in errors(at))


def test_architecture_change_restarts_from_a_preset_with_the_new_groups():
    at = opened("en")
    at.session_state["arch_config"] = TINY.to_dict()
    at.run()
    assert not at.exception
    groups = list(default_groups(build_resnet(TINY)))
    assert stored(at).group_names == groups == ["stem", "layer1", "layer2", "layer3", "head"]
    assert any("does not fit the groups" in info.value for info in at.info)


def finished_finder_run(losses: list[float]) -> str:
    """A finished lr_find run in the real store, as the worker would leave it."""
    store = Store()
    run_id = store.submit("lr_find", {"note": "page test"})
    ctx = JobContext(run_id, store.run_dir(run_id), torch.device("cpu"), store=store)
    lrs = sweep_lrs(1e-6, 1.0, len(losses))
    smoothed = smooth(losses, 0.98)
    for step, (lr, loss, value) in enumerate(zip(lrs, losses, smoothed)):
        ctx.log_metrics(step, {"lr": lr, "loss": loss, "smoothed_loss": value}, series=SERIES)
    ctx.flush()
    ctx.save_json(RESULT_FILE, {"lrs": lrs, "losses": losses, "smoothed": smoothed, "stop_reason": "completed",
                                "suggestion": suggest(lrs, smoothed).to_dict()})
    store.finish(run_id, DONE)
    return run_id


@pytest.mark.parametrize("lang, fragment", [("es", "baja más deprisa"), ("en", "falls fastest")])
def test_finished_finder_run_shows_curve_suggestion_and_explanation(lang, fragment):
    losses = [2.3 - 2.0 / (1 + pow(10, -(i - 25) / 4)) + (0.02 * (i - 40) ** 2 if i > 40 else 0) for i in range(50)]
    run_id = finished_finder_run(losses)
    at = opened(lang, ft_finder_run=run_id)
    assert len(at.get("plotly_chart")) == 4
    assert any(fragment in message.value for message in at.success)


def test_applying_the_suggestion_sets_lr_max():
    losses = [2.3 - 2.0 / (1 + pow(10, -(i - 25) / 4)) + (0.02 * (i - 40) ** 2 if i > 40 else 0) for i in range(50)]
    run_id = finished_finder_run(losses)
    result = json.loads((jobs.run_dir(run_id) / RESULT_FILE).read_text())
    at = opened("en", ft_finder_run=run_id)
    at.button(key="ft_finder_apply").click()
    at.run()
    assert not at.exception
    assert stored(at).lr_max == pytest.approx(result["suggestion"]["lr"], rel=1e-12)


def test_no_descent_gives_a_warning_and_no_button():
    run_id = finished_finder_run([1.0 + 0.1 * i for i in range(30)])
    at = opened("en", ft_finder_run=run_id)
    assert any("never went down" in warning.value for warning in at.warning)
    assert not [button for button in at.button if button.key == "ft_finder_apply"]


def test_finder_epoch_past_schedule_rejected():
    at = opened("en")
    at.number_input(key="ft_finder_epoch").set_value(9)
    at.run()
    at.button(key="ft_finder_run_button").click()
    at.run()
    assert any("Epoch 9 is outside the schedule" in message for message in errors(at))
    assert "ft_finder_run" not in at.session_state


def test_finder_background_job_end_to_end():
    at = opened("en", arch_config=TINY.to_dict())
    at.number_input(key="ft_finder_data_cap").set_value(8)
    at.number_input(key="ft_finder_batch").set_value(8)
    at.slider(key="ft_finder_steps").set_value(12)
    at.run()
    at.button(key="ft_finder_run_button").click()
    at.run()
    run_id = at.session_state["ft_finder_run"]
    deadline = time.monotonic() + 120
    while jobs.get(run_id).is_active and time.monotonic() < deadline:
        time.sleep(0.5)
    run = jobs.get(run_id)
    assert run.status == DONE, run.message_key
    at.run()
    assert not at.exception
    assert len(jobs.metrics(run_id, series=SERIES)) > 0
    assert any("finished" in caption.value for caption in at.caption)
