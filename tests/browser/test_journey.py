"""The whole lesson in a real browser, in Spanish and in English, one session from start to end.

The steps, in order:
- home;
- Arquitectura: ResNet-34 against ResNet-50, then a ResNet-8 small enough to train here;
- Gradientes: the residual network against its plain twin;
- Fine-tuning: gradual unfreezing over two epochs;
- Entrenamiento: two epochs on the embedded digits. The live charts move, a reload mid-run
  reattaches, and a second run waits in the queue and is cancelled while it trains;
- TTA: the finished run on an uploaded digit, with every view;
- Glosario: search a term and follow its link.

Every step leaves a screenshot test-artifacts/journey-<lang>-<step>.png for a person to look at.
Pages are reached by clicking the sidebar, never by loading a URL, so the browser session and
its settings are the ones a student would have. Only the deliberate reload starts a new one.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from core import jobs, tta
from core.glossary import TERMS, search
from tests.browser.helpers import (
    TIMEOUT_MS,
    add_to_multiselect,
    assert_no_errors,
    button,
    choose_radio,
    fill_number,
    open_expander,
    full_screenshot,
    go_to,
    heading,
    log_offset,
    main,
    new_log_problems,
    open_app,
    plot_traces,
    select_option,
    sidebar,
    template_regex,
    tr,
    translation_problems,
    wait_idle,
    widget,
)

RESNET34_PARAMS = "21,797,672"  # torchvision resnet34(): sum of p.numel()
RESNET50_PARAMS = "25,557,032"
RESNET8_PARAMS = "75,290"  # CIFAR ResNet-8 (n=1, width 16, 10 classes), zero-padding shortcuts (option A)
TRAIN_EPOCHS = 2
BATCH_SIZE = 8  # 2 × 179 steps: long enough to reload mid-run, short enough for the lesson
SCRATCH_LR_MAX = 0.003  # AdamW peak LR for every group, training from random weights
RUN_TIMEOUT_S = 240  # two epochs of ResNet-8 on the 1,438 training digits took 30-60 s here
GLOSSARY_TERM = "gradual_unfreezing"
DIGIT_INDEX = 3  # sklearn digits sample 3 is a "3"


def make_digit_png(folder: Path) -> Path:
    """A handwritten digit from scikit-learn's set, enlarged 8× as a teacher's screenshot would be."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.floor(digits.images[DIGIT_INDEX] * (255.0 / 16.0) + 0.5).astype(np.uint8)  # (8, 8)
    big = np.kron(gray, np.ones((8, 8), dtype=np.uint8))  # (64, 64), nearest-neighbour
    path = folder / f"digito-{digits.target[DIGIT_INDEX]}.png"
    buffer = io.BytesIO()
    Image.fromarray(big, mode="L").convert("RGB").save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def digit_png(tmp_path) -> Path:
    return make_digit_png(tmp_path)


def shot(page, lang: str, step: str, problems: list[str]) -> None:
    """Save the step's screenshot, and note raw catalog keys or other-language text on the page."""
    full_screenshot(page, f"journey-{lang}-{step}")
    problems.extend(f"{step}: {problem}" for problem in translation_problems(page, lang))


# --- steps -------------------------------------------------------------------------------------


def step_home(page, base_url: str, lang: str, problems: list[str]) -> None:
    open_app(page, base_url)  # a student arrives without any parameter: Spanish first
    heading(page, tr("es", "home.path_header")).wait_for(timeout=TIMEOUT_MS)
    if lang == "en":
        choose_radio(page, tr("es", "common.lang_en"), scope=sidebar(page))
        heading(page, tr("en", "home.path_header")).wait_for(timeout=TIMEOUT_MS)
        assert "lang=en" in page.url, page.url
    heading(page, tr(lang, "home.env_header")).wait_for(timeout=TIMEOUT_MS)
    sidebar(page).get_by_text(tr(lang, "common.sidebar_model", name="ResNet-18")).wait_for()
    assert_no_errors(page, "home")
    shot(page, lang, "1-home", problems)


def step_architecture(page, lang: str, problems: list[str]) -> None:
    go_to(page, lang, "architecture")
    side, body = sidebar(page), main(page)
    select_option(page, tr(lang, "arch.depth"), "ResNet-34", scope=side)
    heading(page, "ResNet-34").wait_for(timeout=TIMEOUT_MS)
    choose_radio(page, tr(lang, "arch.view_compare"), scope=body)
    widget(page, "stSelectbox", tr(lang, "arch.compare_with"), body).wait_for(timeout=TIMEOUT_MS)
    select_option(page, tr(lang, "arch.compare_with"), "ResNet-50", scope=body)
    heading(page, tr(lang, "arch.compare_b", name="ResNet-50")).wait_for(timeout=TIMEOUT_MS)
    heading(page, tr(lang, "arch.compare_a", name="ResNet-34")).wait_for(timeout=TIMEOUT_MS)
    values = page.locator("[data-testid='stMetricValue']").all_inner_texts()
    assert RESNET34_PARAMS in values, values
    assert RESNET50_PARAMS in values, values
    assert_no_errors(page, "architecture: ResNet-34 vs ResNet-50")
    shot(page, lang, "2-architecture-34-vs-50", problems)

    # The network the rest of the lesson trains: CIFAR ResNet-8, small enough for a CPU.
    # Each change reruns the page, so wait for its result before the next change.
    choose_radio(page, tr(lang, "arch.family_cifar"), scope=side)
    heading(page, "ResNet-20").wait_for(timeout=TIMEOUT_MS)
    select_option(page, tr(lang, "arch.cifar_depth"), tr(lang, "arch.cifar_custom"), scope=side)
    widget(page, "stNumberInput", tr(lang, "arch.cifar_n"), side).wait_for(timeout=TIMEOUT_MS)
    fill_number(page, tr(lang, "arch.cifar_n"), 1, scope=side)
    heading(page, "ResNet-8").wait_for(timeout=TIMEOUT_MS)
    side.get_by_text(tr(lang, "common.sidebar_model", name="ResNet-8")).wait_for(timeout=TIMEOUT_MS)
    assert RESNET8_PARAMS in page.locator("[data-testid='stMetricValue']").all_inner_texts()
    assert_no_errors(page, "architecture: ResNet-8")
    shot(page, lang, "3-architecture-resnet8", problems)


def step_gradients(page, lang: str, problems: list[str]) -> None:
    go_to(page, lang, "gradients")
    body = main(page)
    labels = body.locator("[data-testid='stMetricLabel']")
    for variant in ("residual", "plain"):
        expected = tr(lang, "grad.metric_ratio", net=tr(lang, f"grad.net_{variant}"))
        labels.filter(has_text=expected).first.wait_for(timeout=TIMEOUT_MS)
    chart_title = tr(lang, "grad.layers_title", step=0)
    body.locator(".js-plotly-plot .gtitle").filter(has_text=chart_title).first.wait_for(timeout=TIMEOUT_MS)
    traces = [trace["name"] for trace in plot_traces(page, chart_title) or []]
    assert traces == [tr(lang, "grad.net_residual"), tr(lang, "grad.net_plain")], traces
    assert_no_errors(page, "gradients")
    shot(page, lang, "4-gradients", problems)


def wait_for_gantt(page, lang: str, expected: dict[str, int]) -> None:
    """Wait until the Gantt chart gives each group the first trainable epoch in `expected`."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while gantt_starts(page, lang) != expected:
        assert time.monotonic() < deadline, f"Gantt chart never showed {expected}: {gantt_starts(page, lang)}"
        page.wait_for_timeout(500)


def apply_preset(page, lang: str, preset: str) -> None:
    body = main(page)
    select_option(page, tr(lang, "ft.preset"), tr(lang, f"ft.preset_{preset}"), scope=body)
    button(page, tr(lang, "ft.apply_preset")).click()
    wait_idle(page)


def step_finetuning(page, lang: str, problems: list[str]) -> None:
    go_to(page, lang, "finetuning")
    body = main(page)
    body.get_by_text(tr(lang, "ft.intro", model="ResNet-8")).wait_for(timeout=TIMEOUT_MS)
    fill_number(page, tr(lang, "ft.epochs"), TRAIN_EPOCHS, scope=body)
    apply_preset(page, lang, "gradual_unfreezing")
    # Gradual unfreezing over two epochs: the head learns from epoch 0, layer3 joins at epoch 1,
    # and the groups whose turn would come later stay frozen for both epochs.
    wait_for_gantt(page, lang, {"stem": 2, "layer1": 2, "layer2": 2, "layer3": 1, "head": 0})
    body.get_by_text(tr(lang, "ft.stored_for_training")).wait_for(timeout=TIMEOUT_MS)
    assert_no_errors(page, "fine-tuning: gradual unfreezing")
    shot(page, lang, "5-finetuning-gradual-unfreezing", problems)

    # NOTE: from random weights (no ImageNet weights offline) a frozen backbone learns next to
    # nothing in two epochs: with the plan above a run ended at 13 % validation accuracy, chance
    # being 10 %. So the run below trains every group from step 0 (full fine-tuning) at a
    # from-scratch peak LR, which reached 93-97 % in two epochs here.
    apply_preset(page, lang, "full_finetuning")
    wait_for_gantt(page, lang, {"stem": 0, "layer1": 0, "layer2": 0, "layer3": 0, "head": 0})
    fill_number(page, tr(lang, "ft.lr_max"), SCRATCH_LR_MAX, scope=body)
    body.get_by_text(tr(lang, "ft.stored_for_training")).wait_for(timeout=TIMEOUT_MS)
    assert_no_errors(page, "fine-tuning: full fine-tuning")
    shot(page, lang, "5b-finetuning-full", problems)


def gantt_starts(page, lang: str) -> dict[str, int] | None:
    """First trainable epoch per group as the Gantt chart draws it (the epoch count when never)."""
    traces = plot_traces(page, tr(lang, "ft.chart_gantt_title"))
    if not traces or len(traces) < 2:
        return None
    trainable = traces[1]  # bars from the first trainable epoch to the end
    return dict(zip(trainable["y"], trainable["base"]))


def progress_state(page, lang: str) -> tuple[int, int] | None:
    """(done, total) from the live progress bar, or None when no bar is shown."""
    bars = page.locator("[data-testid='stProgress']")
    if bars.count() == 0:
        return None
    match = template_regex(lang, "train.progress").search(bars.first.inner_text())
    if match is None:
        return None
    total = match["total"]  # "?" until the run has reported its length
    return int(match["done"]), int(total) if total.isdigit() else 0


def loss_points(page, lang: str) -> int:
    """Training points drawn in the live loss chart (0 while it is not drawn)."""
    traces = plot_traces(page, tr(lang, "train.chart_loss"))
    return len(traces[0]["x"] or []) if traces else 0


def wait_for_live(page, lang: str, store: jobs.Store, run_id: str, after: tuple[int, int]) -> tuple[int, int]:
    """Wait until the page shows more steps and more loss points than `after`; return (steps, points)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        steps = (progress_state(page, lang) or (0, 0))[0]
        points = loss_points(page, lang)
        if steps > after[0] and points > after[1]:
            return steps, points
        run = store.get(run_id)
        assert run.is_active, f"the run ended ({run.status}) while the page still showed step {steps}, {points} points"
        assert time.monotonic() < deadline, (
            f"the live view did not move past {after} in {RUN_TIMEOUT_S} s (it shows step {steps}, "
            f"{points} loss points; the run is at step {run.progress_done})")
        page.wait_for_timeout(300)


def run_id_in_url(page) -> str | None:
    match = re.search(r"[?&]run=([0-9a-f-]+)", page.url)
    return match[1] if match else None


def status_text(lang: str, status: str) -> str:
    return tr(lang, f"train.status_{status}")


def wait_for_status(page, lang: str, run_id: str, status: str, timeout_s: float) -> None:
    """Wait until the current-run block shows `status` for `run_id` (the fragment redraws each second)."""
    line = page.locator("[data-testid='stMarkdownContainer']").filter(has_text=run_id).filter(
        has_text=status_text(lang, status))
    line.first.wait_for(timeout=timeout_s * 1000)


def open_run_from_history(page, lang: str, name: str, run_id: str) -> None:
    select_option(page, tr(lang, "train.open_label"), f"{name} · {run_id}", scope=main(page))
    button(page, tr(lang, "train.open")).click()
    page.wait_for_url(re.compile(rf"run={run_id}"), timeout=TIMEOUT_MS)
    wait_idle(page)


def start_run(page, lang: str, name: str) -> str:
    field = widget(page, "stTextInput", tr(lang, "train.run_name")).locator("input")
    field.fill(name)
    field.press("Enter")
    wait_idle(page)
    before = run_id_in_url(page)
    button(page, tr(lang, "train.start")).click()
    page.wait_for_function("(before) => { const m = location.search.match(/run=([0-9a-f-]+)/);"
                           " return m && m[1] !== before; }", arg=before, timeout=TIMEOUT_MS)
    wait_idle(page)
    run_id = run_id_in_url(page)
    assert run_id and jobs.RUN_ID_PATTERN.match(run_id), page.url
    heading(page, tr(lang, "train.current_header", name=name)).wait_for(timeout=TIMEOUT_MS)
    return run_id


def step_training(page, lang: str, runs_dir: Path, problems: list[str]) -> str:
    """Train, watch, reload, queue and cancel a second run; return the finished run's id.

    Failures that do not stop the journey are appended to `problems`.
    """
    go_to(page, lang, "training")
    body = main(page)
    body.get_by_text(tr(lang, "train.arch_used", name="ResNet-8").replace("**", "")).first.wait_for()
    schedule = tr(lang, "train.schedule_from_ft", epochs=TRAIN_EPOCHS, optimizer="adamw", lr=f"{SCRATCH_LR_MAX:g}",
                  frozen="-")
    body.get_by_text(schedule).wait_for(timeout=TIMEOUT_MS)
    assert_no_errors(page, "training: new-run form")
    shot(page, lang, "6-training-form", problems)

    open_expander(page, tr(lang, "train.options_title"), scope=body)
    select_option(page, tr(lang, "train.batch_size"), str(BATCH_SIZE), scope=body)
    first = start_run(page, lang, f"journey-{lang}")

    # The live block redraws itself: the step count and the loss curve grow between two polls.
    store = jobs.Store(runs_dir)
    poll_1 = wait_for_live(page, lang, store, first, after=(0, 0))
    poll_2 = wait_for_live(page, lang, store, first, after=poll_1)
    assert poll_2[0] > poll_1[0], (poll_1, poll_2)
    assert poll_2[1] > poll_1[1], (poll_1, poll_2)

    # Reload mid-run: the run id in the URL brings the live view back (in a new browser session).
    run = store.get(first)
    assert run.status == jobs.RUNNING, f"the run is {run.status} before the reload"
    assert run.progress_done < 0.8 * run.progress_total, (
        f"the run is at step {run.progress_done} of {run.progress_total} before the reload: "
        "too close to its end to see it reattach")
    page.reload(timeout=TIMEOUT_MS)
    heading(page, tr(lang, "train.title")).or_(heading(page, tr("es", "train.title"))).wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    if lang != "es" and heading(page, tr("es", "train.title")).count():
        problems.append(f"after a reload on the training page the language fell back to Spanish (URL {page.url})")
        # NOTE: the reload loses the language because it is not in the URL after a page switch.
        # Switch it back to go on with the journey; the test still fails on it at the end.
        choose_radio(page, tr("es", f"common.lang_{lang}"), scope=sidebar(page))
    heading(page, tr(lang, "train.current_header", name=f"journey-{lang}")).wait_for(timeout=TIMEOUT_MS)
    assert run_id_in_url(page) == first
    if store.get(first).is_active:
        wait_for_live(page, lang, store, first, after=poll_2)
        shot(page, lang, "7-training-live-after-reload", problems)
    else:  # it ended while the page loaded: the reattached page shows the finished run
        wait_for_status(page, lang, first, "done", timeout_s=60)
    assert_no_errors(page, "training: after reload")

    # A second run, cancelled while it trains. NOTE: the reload started a new browser session,
    # so this form is back at the defaults (ResNet-18, no Fine-tuning plan). The run is only
    # there to be cancelled, so the defaults do.
    open_expander(page, tr(lang, "train.new_header"), scope=body)
    second = start_run(page, lang, f"journey-{lang}-2")
    # One run per device: while the first trains, the second shows its place in the queue.
    queued = page.get_by_text(tr(lang, "train.queue_position", position=1))
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not queued.is_visible():
        if store.get(second).status != jobs.QUEUED:
            break  # the first run ended meanwhile and the second started
        assert time.monotonic() < deadline, "the queued second run shows no queue position"
        page.wait_for_timeout(300)
    else:
        shot(page, lang, "9-training-queued", problems)
    wait_for_status(page, lang, second, "running", timeout_s=RUN_TIMEOUT_S)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while store.get(second).progress_done == 0:  # cancel it once it has really trained
        assert time.monotonic() < deadline, "the second run never made a step"
        page.wait_for_timeout(500)
    button(page, tr(lang, "train.cancel")).click()
    wait_for_status(page, lang, second, "cancelled", timeout_s=RUN_TIMEOUT_S)
    assert store.get(second).status == jobs.CANCELLED
    wait_idle(page)
    assert_no_errors(page, "training: cancelled run")
    shot(page, lang, "10-training-cancelled", problems)

    open_run_from_history(page, lang, f"journey-{lang}", first)
    wait_for_status(page, lang, first, "done", timeout_s=RUN_TIMEOUT_S)
    wait_idle(page)
    page.get_by_role("heading", name=tr(lang, "train.results_header")).wait_for(timeout=TIMEOUT_MS)
    summary_start = tr(lang, "train.results_summary").split("{")[0]
    summary = page.get_by_text(summary_start).first.inner_text()
    accuracy = float(template_regex(lang, "train.results_summary").search(summary)["acc"].rstrip("%")) / 100
    assert accuracy > 0.5, f"two epochs on the digits should get well above chance (10 %): {summary}"
    page.locator(".js-plotly-plot .gtitle").filter(has_text=tr(lang, "train.chart_confusion")).first.wait_for()
    assert_no_errors(page, "training: results")
    shot(page, lang, "11-training-results", problems)
    return first


def step_tta(page, lang: str, run_id: str, digit: Path, problems: list[str]) -> None:
    go_to(page, lang, "tta")
    body = main(page)
    choose_radio(page, tr(lang, "tta.model_src_run"), scope=body)
    select_option(page, tr(lang, "tta.run_select"), tr(lang, "tta.run_option", name=f"journey-{lang}", run_id=run_id),
                  scope=body)
    choose_radio(page, tr(lang, "tta.src_upload"), scope=body)
    uploader = widget(page, "stFileUploader", tr(lang, "tta.upload_label"), body)
    uploader.locator("input[type='file']").set_input_files(str(digit))
    wait_idle(page)

    for family in tta.VIEW_FAMILIES:
        label = tr(lang, f"tta.family_{family}", scales=", ".join(f"×{s:g}" for s in tta.SCALE_FACTORS),
                   angles=", ".join(f"{a:+g}" for a in tta.ROTATION_DEGREES))
        add_to_multiselect(page, tr(lang, "tta.views_label"), label, scope=body)

    expected_views = len(tta.batch_views(tta.VIEW_FAMILIES))
    body.get_by_text(tr(lang, "tta.metric_tta"), exact=True).first.wait_for(timeout=TIMEOUT_MS)
    body.get_by_text(tr(lang, "tta.views_grid_header", k=5)).wait_for(timeout=TIMEOUT_MS)
    # The original, the model's exact input, and one picture per view.
    expect(body.locator("[data-testid='stImage']")).to_have_count(2 + expected_views, timeout=TIMEOUT_MS)
    predicted = body.locator("[data-testid='stMetric']").filter(has_text=tr(lang, "tta.metric_identity"))
    assert predicted.locator("[data-testid='stMetricValue']").inner_text() in [str(d) for d in range(10)]
    assert_no_errors(page, "tta")
    shot(page, lang, "12-tta", problems)


def step_glossary(page, lang: str, problems: list[str]) -> None:
    go_to(page, lang, "glossary")
    body = main(page)
    name = tr(lang, f"glossary.{GLOSSARY_TERM}_name")
    field = widget(page, "stTextInput", tr(lang, "glossary.search"), body).locator("input")
    field.fill(name)
    field.press("Enter")
    wait_idle(page)

    texts = {}
    for term in TERMS:
        parts = [tr(lang, f"glossary.{term.id}_name"), tr(lang, f"glossary.{term.id}_def")]
        if term.has_note:
            parts.append(tr(lang, f"glossary.{term.id}_note"))
        texts[term.id] = "\n".join(parts)
    expected = search(name, texts)
    assert GLOSSARY_TERM in expected
    body.get_by_text(tr(lang, "glossary.count", shown=len(expected), total=len(TERMS))).wait_for(timeout=TIMEOUT_MS)
    assert_no_errors(page, "glossary: search")
    shot(page, lang, "13-glossary-search", problems)

    term_heading = body.locator(f"h3#{GLOSSARY_TERM}")  # st.subheader(anchor=term id)
    link = term_heading.locator("xpath=following::a[@data-testid='stPageLink-NavLink'][1]")
    assert tr(lang, "common.nav_finetuning") in link.inner_text()
    link.click()
    page.wait_for_url(re.compile(r"/finetuning(\?|$)"), timeout=TIMEOUT_MS)
    heading(page, tr(lang, "ft.title")).wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    assert_no_errors(page, "glossary: followed link")
    shot(page, lang, "14-glossary-link-finetuning", problems)


# --- the journey -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["es", "en"])
def test_journey(streamlit_server, browser_page, streamlit_log_path, streamlit_runs_dir, digit_png, lang):
    page = browser_page
    offset = log_offset(streamlit_log_path)
    started = time.monotonic()

    problems: list[str] = []  # failures that do not stop the journey, reported at its end
    step_home(page, streamlit_server, lang, problems)
    step_architecture(page, lang, problems)
    step_gradients(page, lang, problems)
    step_finetuning(page, lang, problems)
    run_id = step_training(page, lang, streamlit_runs_dir, problems)
    step_tta(page, lang, run_id, digit_png, problems)
    step_glossary(page, lang, problems)

    print(f"journey {lang}: {time.monotonic() - started:.0f} s")
    logged = new_log_problems(streamlit_log_path, offset)
    assert not logged, "the server logged errors during the journey:\n\n" + "\n\n".join(logged)
    assert not problems, "\n".join(problems)
