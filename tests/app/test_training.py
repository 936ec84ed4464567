"""Entrenamiento page under AppTest: both languages, starting a run, reattaching from the URL.

A finished run is produced by the worker's own `execute` (the code path the worker process
runs), in this process, so the results section is checked without waiting for a subprocess.
"""

import os

import pytest

from core import checkpoints, jobs
from core.i18n import translate
from core.models import cifar_config
from core.schedule import Schedule, make_preset
from core.worker import execute
from tests.app.conftest import isolated_runs_store, open_page, stop_workers
from tests.test_engine import run_config

PAGE = "pages/training.py"
TINY_ARCH = cifar_config(8, base_width=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_runs_store(tmp_path_factory, "page-runs") as runs_store:
        yield runs_store


@pytest.fixture(scope="module")
def finished_run(store):
    config = {**run_config(epochs=1, data={"source": "digits", "max_per_class": 30}), "device": "cpu"}
    run_id = store.submit("train", config, name="digits-finished", owner="someone-else")
    assert execute(store, store.claim_next("cpu", os.getpid())) == jobs.DONE
    return run_id


def texts(elements) -> list[str]:
    return [element.value for element in elements]


@pytest.mark.parametrize("lang", ["es", "en"])
def test_new_run_form_renders(store, lang):
    at = open_page(PAGE, lang, arch_config=TINY_ARCH.to_dict())
    at.run()
    assert not at.exception
    assert at.title[0].value == translate(lang, "train.title")
    assert translate(lang, "train.start") in [button.label for button in at.button]
    assert translate(lang, "train.data_header") in texts(at.subheader)


def test_start_submits_run_into_url(store):
    at = open_page(PAGE, "es", arch_config=TINY_ARCH.to_dict())
    at.run()
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_data_cap").set_value(20)
    at.text_input(key="train_run_name").set_value("desde la página")
    at.button(key="train_start").click().run()
    assert not at.exception

    run_id = at.query_params["run"][0] if isinstance(at.query_params["run"], list) else at.query_params["run"]
    run = store.get(run_id)
    assert run.name == "desde la página"
    assert run.owner == at.session_state["train_owner"]
    assert run.config["architecture"]["stage_blocks"] == [1, 1, 1]
    assert run.config["architecture"]["num_classes"] == 10
    assert run.config["epochs"] == 1
    assert run.config["data"]["max_per_class"] == 20
    assert translate("es", "train.current_header", name="desde la página") in texts(at.header)
    store.cancel(run_id)
    stop_workers(store)  # the page started one; the next tests claim runs themselves


@pytest.mark.parametrize("lang", ["es", "en"])
def test_new_session_reattaches_to_finished_run(store, finished_run, lang):
    at = open_page(PAGE, lang)
    at.query_params["run"] = finished_run
    at.run()
    assert not at.exception
    assert translate(lang, "train.current_header", name="digits-finished") in texts(at.header)
    assert any(translate(lang, "train.status_done") in text for text in texts(at.markdown))
    assert translate(lang, "train.results_header") in texts(at.subheader)
    assert translate(lang, "train.top_losses_header") in texts(at.subheader)
    assert len(at.get("plotly_chart")) >= 7  # 5 live charts, confusion matrix, per-class accuracy, overlays
    assert {button.label for button in at.get("download_button")} == {
        translate(lang, "train.download_weights"), translate(lang, "train.download_config"),
        translate(lang, "train.download_metrics")}
    history = at.dataframe[-1].value
    assert finished_run in history[translate(lang, "train.col_id")].tolist()
    message = [text for text in texts(at.info) if text.startswith(translate(lang, "train.msg_completed", epochs=1,
                                                                              best_epoch=1, monitor="val_loss",
                                                                              best_value="")[:20])]
    assert message


def test_queued_run_shows_its_position(store):
    first = store.submit("train", {"device": "queue-test"}, name="first")
    second = store.submit("train", {"device": "queue-test"}, name="second")
    at = open_page(PAGE, "en")
    at.query_params["run"] = second
    at.run()
    assert not at.exception
    assert translate("en", "train.queue_position", position=2) in texts(at.info)
    assert translate("en", "train.cancel") in [button.label for button in at.button]
    for run_id in (first, second):
        store.cancel(run_id)


def test_interrupted_run_offers_resume(store):
    run_id = store.submit("train", {"device": "interrupt-test"}, name="gone")
    store.register_worker(os.getpid(), "interrupt-test")
    store.claim_next("interrupt-test", os.getpid())
    store.unregister_worker(os.getpid())  # the worker vanished: the page finds the orphan
    at = open_page(PAGE, "es")
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    assert store.get(run_id).status == jobs.INTERRUPTED
    assert translate("es", "train.msg_interrupted") in texts(at.info)
    assert translate("es", "train.resume") in [button.label for button in at.button]
    store.cancel(run_id)


def test_bad_run_id_shows_error(store):
    at = open_page(PAGE, "en")
    at.query_params["run"] = "../../etc/passwd"
    at.run()
    assert not at.exception
    assert translate("en", "train.err_bad_run_id", run_id="../../etc/passwd") in texts(at.error)


def test_delete_from_history(store, finished_run):
    doomed = store.submit("train", {"device": "cpu"}, name="to-delete")
    store.cancel(doomed)
    at = open_page(PAGE, "en")
    at.run()
    at.selectbox(key="train_delete_choice").set_value(doomed)
    at.button(key="train_delete").click().run()
    assert not at.exception
    assert store.get(doomed) is None
    assert store.get(finished_run) is not None
    assert not (store.root / doomed).exists()
    assert checkpoints.final_weights_path(store.run_dir(finished_run)) is not None


@pytest.mark.parametrize(("preset", "warned"), [("gradual_unfreezing", True), ("full_finetuning", False)])
def test_frozen_random_groups_warned(store, preset, warned):
    names = ["stem", "layer1", "layer2", "layer3", "head"]  # the groups of a 3-stage CIFAR ResNet
    schedule = make_preset(preset, names, epochs=2)
    at = open_page(PAGE, "en", arch_config=TINY_ARCH.to_dict(), schedule_json=schedule.to_json())
    at.run()
    assert not at.exception
    frozen = ", ".join(group.name for group in schedule.groups if group.unfreeze_epoch != 0)
    warning = translate("en", "train.frozen_random_warning", groups=frozen)
    assert (warning in texts(at.warning)) is warned
    if warned:
        assert frozen == "stem, layer1, layer2, layer3"  # only the head trains in epoch 0


def test_reuse_restores_network_and_plan(store):
    names = ["stem", "layer1", "layer2", "layer3", "head"]
    schedule = make_preset("full_finetuning", names, epochs=3, steps_per_epoch=7)
    config = {**run_config(epochs=3, data={"source": "digits", "max_per_class": 10}),
              "architecture": TINY_ARCH.replace(num_classes=10).to_dict(), "schedule": schedule.to_dict()}
    run_id = store.submit("train", config, name="to-reuse", owner="someone-else")
    at = open_page(PAGE, "en")  # a new session: ResNet-18 and no plan
    at.query_params["run"] = run_id
    at.run()
    assert at.session_state["arch_config"] != TINY_ARCH.replace(num_classes=10).to_dict()
    at.button(key="train_reuse").click().run()
    assert not at.exception
    assert at.session_state["arch_config"]["stage_blocks"] == [1, 1, 1]
    assert at.session_state["arch_config"]["base_width"] == 8
    assert Schedule.from_json(at.session_state["schedule_json"]) == schedule
    assert translate("en", "train.reused", run_id=run_id) in texts(at.caption)
    store.cancel(run_id)


def test_last_steps_say_finishing(store):
    run_id = store.submit("train", {"device": "finish-test"}, name="almost")
    store.register_worker(os.getpid(), "finish-test")  # this process acts as the worker
    assert store.claim_next("finish-test", os.getpid()).id == run_id
    store.update_progress(run_id, 40, 40)
    at = open_page(PAGE, "en")
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    assert at.get("progress")[0].proto.text == translate("en", "train.progress_finishing", total=40)
    store.finish(run_id, jobs.DONE)
    store.unregister_worker(os.getpid())


def test_run_survives_page_switch(store, finished_run):
    at = open_page("app.py", "en")
    at.run()
    at.switch_page(PAGE)
    at.query_params["run"] = finished_run
    at.run()
    at.switch_page("pages/glossary.py").run()
    at.query_params.pop("run", None)  # the sidebar link drops the query, as in a browser
    at.switch_page(PAGE).run()
    assert not at.exception
    assert translate("en", "train.current_header", name="digits-finished") in texts(at.header)
    assert at.query_params["run"] in (finished_run, [finished_run])
