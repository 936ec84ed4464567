"""Gradientes page under AppTest, in both languages: numbers shown, a diverging configuration,
the form, the shattered-gradients panel and the degradation demo (start, reattach from the URL).

The probe configurations are tiny (CIFAR-8 and CIFAR-56 on batches of 8), so the page renders
fast. The numbers the page shows are compared with core.gradients.compare on the same configuration.
"""

import dataclasses
import os

import pytest

from core import degradation, jobs
from core.gradients import ProbeSettings, compare
from core.i18n import translate
from core.models import cifar_config
from core.worker import execute
from tests.app.conftest import isolated_runs_store, open_page

PAGE = "pages/gradients.py"
RUN_PARAM = "deg_run"
SMALL = {"arch": cifar_config(8).to_dict(),
         "settings": dataclasses.asdict(ProbeSettings(batch_size=8, data="noise", steps=2))}
DIVERGING = {"arch": cifar_config(56, batch_norm=False, init="he").to_dict(),
             "settings": dataclasses.asdict(ProbeSettings(batch_size=8, data="noise", steps=2, lr=0.1))}


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def metric_values(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_runs_store(tmp_path_factory, "gradient-runs") as runs_store:
        yield runs_store


@pytest.mark.parametrize("lang", ["es", "en"])
def test_probe_shows_the_measured_ratios(lang):
    at = open_page(PAGE, lang, grad_request=SMALL)
    at.run()
    assert not at.exception
    assert at.title[0].value == translate(lang, "grad.title")

    expected = compare(cifar_config(8), ProbeSettings(**SMALL["settings"]))
    shown = metric_values(at)
    for variant in ("residual", "plain"):
        name = translate(lang, f"grad.net_{variant}")
        assert shown[translate(lang, "grad.metric_ratio", net=name)] == f"{expected[variant][0].first_last_ratio:.3g}"
        assert shown[translate(lang, "grad.metric_loss", net=name)] == f"{expected[variant][0].loss:.4g}"
    assert len(at.get("plotly_chart")) == 5  # layers, signal, two heatmaps, groups
    assert at.error == []


@pytest.mark.parametrize("lang", ["es", "en"])
def test_diverging_configuration_is_reported_not_drawn(lang):
    at = open_page(PAGE, lang, grad_request=DIVERGING)
    at.run()
    assert not at.exception
    banners = texts(at.error)
    residual = translate(lang, "grad.net_residual")
    assert len(banners) == 1
    assert residual in banners[0]
    assert "layer" in banners[0]  # the block where the forward signal stopped being finite

    at.select_slider(key="grad_step").set_value(1).run()
    assert metric_values(at)[translate(lang, "grad.metric_ratio", net=residual)] == translate(lang, "grad.diverged_short")
    findings = "\n".join(texts(at.markdown))
    assert translate(lang, "grad.where_forward") in findings


def test_form_submission_changes_the_request():
    at = open_page(PAGE, "en", grad_request=SMALL)
    at.run()
    at.selectbox(key="grad_depth_basic").set_value(14)
    at.radio(key="grad_data").set_value("noise")
    at.select_slider(key="grad_batch_size").set_value(8)
    at.number_input(key="grad_steps").set_value(0)
    at.selectbox(key="grad_init").set_value("zero_gamma")
    at.button(key="grad_run").click().run()
    assert not at.exception
    request = at.session_state["grad_request"]
    assert request["arch"]["stage_blocks"] == [2, 2, 2]
    assert request["arch"]["init"] == "zero_gamma"
    assert request["settings"]["steps"] == 0
    zero_gamma_note = [text for text in texts(at.markdown) if "Goyal" in text]
    assert zero_gamma_note and "12 of the 12" in zero_gamma_note[0]


def test_architecture_model_can_be_probed():
    arch = cifar_config(8, base_width=4)
    at = open_page(PAGE, "es", grad_request=SMALL, arch_config=arch.to_dict())
    at.run()
    at.checkbox(key="grad_use_arch").check()
    at.select_slider(key="grad_batch_size").set_value(8)
    at.number_input(key="grad_steps").set_value(0)
    at.button(key="grad_run").click().run()
    assert not at.exception
    assert at.session_state["grad_request"]["arch"]["base_width"] == 4


@pytest.mark.parametrize("lang", ["es", "en"])
def test_shattered_panel(lang):
    at = open_page(PAGE, lang, grad_request=SMALL, grad_section="shattered")
    at.run()
    at.select_slider(key="grad_points").set_value(32).run()
    assert not at.exception
    lines = "\n".join(texts(at.markdown))
    for variant in ("residual", "plain"):
        assert translate(lang, f"grad.net_{variant}") in lines
    assert len(at.get("plotly_chart")) == 2


@pytest.fixture(scope="module")
def finished_run(store):
    """A tiny degradation run executed by the worker's own `execute`, in this process."""
    config = degradation.DegradationConfig(depths=(8, 14), epochs=1, batch_size=16, max_per_class=12, warmup_steps=1)
    run_id = store.submit("degradation", config.to_dict(), name="tiny", device="cpu")
    assert execute(store, store.claim_next("cpu", os.getpid())) == jobs.DONE
    return run_id


@pytest.mark.parametrize("lang", ["es", "en"])
def test_finished_degradation_run_from_the_url(finished_run, lang):
    at = open_page(PAGE, lang)
    at.query_params[RUN_PARAM] = finished_run
    at.run()
    assert not at.exception
    assert at.session_state["grad_section"] == "degradation"
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value
    assert len(table) == 4
    assert table.columns[0] == translate(lang, "grad.col_network")
    facts = [text for text in texts(at.markdown) if text.startswith("- ")]
    assert len(facts) == 3


def test_start_button_submits_a_background_run(store):
    at = open_page(PAGE, "en", grad_section="degradation")
    at.run()
    at.button(key="grad_deg_start").click().run()
    assert not at.exception
    run_id = at.query_params[RUN_PARAM]
    run_id = run_id[0] if isinstance(run_id, list) else run_id
    run = store.get(run_id)
    assert run.kind == "degradation"
    assert run.config == degradation.preset_config("quick").to_dict()
    store.cancel(run_id)


def test_bad_run_id_shows_error(store):
    at = open_page(PAGE, "en")
    at.query_params[RUN_PARAM] = "../../etc"
    at.run()
    assert not at.exception
    assert at.error


def test_degradation_run_survives_page_switch(finished_run):
    at = open_page("app.py", "en")
    at.run()
    at.switch_page("pages/gradients.py")
    at.query_params[RUN_PARAM] = finished_run
    at.run()
    assert at.session_state["grad_section"] == "degradation"
    at.switch_page("pages/glossary.py").run()
    at.query_params.pop(RUN_PARAM, None)  # the sidebar link drops the query, as in a browser
    at.switch_page("pages/gradients.py").run()
    assert not at.exception
    assert at.session_state["grad_section"] == "degradation"
    assert at.query_params[RUN_PARAM] in (finished_run, [finished_run])
    assert len(at.get("plotly_chart")) == 1


def test_section_from_query_opens_it():
    at = open_page(PAGE, "en", grad_section="probe")
    at.query_params["section"] = "degradation"
    at.run()
    assert not at.exception
    assert at.session_state["grad_section"] == "degradation"
    assert "section" not in at.query_params


def test_zero_gamma_plain_heatmap_explained():
    request = {"arch": cifar_config(8, init="zero_gamma").to_dict(),
               "settings": dataclasses.asdict(ProbeSettings(batch_size=8, data="noise", steps=1))}
    at = open_page(PAGE, "en", grad_request=request)
    at.run()
    assert not at.exception
    infos = texts(at.info)
    assert translate("en", "grad.heatmap_all_zero", net=translate("en", "grad.net_plain")) in infos
    assert translate("en", "grad.heatmap_all_zero", net=translate("en", "grad.net_residual")) not in infos


def test_run_picker_shows_remembered_run(finished_run):
    at = open_page("app.py", "en")
    at.run()
    at.switch_page(PAGE)
    at.query_params[RUN_PARAM] = finished_run
    at.run()
    at.switch_page("pages/glossary.py").run()
    at.query_params.pop(RUN_PARAM, None)  # the sidebar link drops the query, as in a browser
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.selectbox(key="grad_deg_pick").value == finished_run
