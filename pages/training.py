"""Entrenamiento: train the current architecture with the current schedule on a dataset, live.

The run executes in the worker process of core.jobs, never in this script. The page submits it,
puts its id in the URL (?run=...) so a reload, a second tab or a page switch reattaches, and
polls the SQLite store once a second in a fragment. Sections: the current run (progress, live
charts, cancel, results and downloads), a new run, and the run history.

Unsaved choices live in st.session_state only, so people sharing a server never see each
other's. Runs are shared history, and each stores the owner id of the session that started it.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid

import pandas as pd
import streamlit as st
import torch

from core import checkpoints, jobs
from core.engine import DEFAULT_EPOCHS, MONITORS
from core.errors import LabError
from core.models import ResNetConfig, build_resnet, canonical_name, total_stride, weighted_depth
from core.schedule import Schedule
from ui import run_charts, state
from ui.common import page_setup, remembered_run_id, show_error, show_run_id
from ui.dataset_picker import _cached_dataset, pick_dataset, pick_preprocessing
from ui.weights_picker import pick_weights

RUN_PARAM = "run"  # query parameter holding the run id: a reload keeps it
OWNER_KEY = "train_owner"  # this browser session's owner id, stored with the runs it starts
WEIGHTS_KIND_KEY = "train_weights_kind"  # the weights picker's radio (key prefix "train_weights")
MAX_POINTS = 400  # metric rows per series drawn per redraw, whatever the run's length
BATCH_SIZES = (8, 16, 32, 64, 128, 256)
TOP_LOSS_COLUMNS = 8
STATUS_ICONS = {jobs.QUEUED: ":material/hourglass_top:", jobs.RUNNING: ":material/play_circle:",
                jobs.DONE: ":material/check_circle:", jobs.FAILED: ":material/error:",
                jobs.CANCELLED: ":material/stop_circle:", jobs.INTERRUPTED: ":material/warning:"}
LAST_RUN = "train_last_run"  # the run this session shows, brought back after a page switch
NEW_RUN_OPEN = "train_new_run_open"  # whether this session has the "New run" expander open
REUSED_KEY = "train_reused_run"  # the run whose settings this session took last
HISTORY_REFRESH_S = 2  # the history table refreshes this often while any run is queued or running

t = page_setup("train.title")


def session_owner() -> str:
    if OWNER_KEY not in st.session_state:
        st.session_state[OWNER_KEY] = uuid.uuid4().hex[:8]
    return st.session_state[OWNER_KEY]


def open_run(run_id: str | None) -> None:
    show_run_id(RUN_PARAM, LAST_RUN, run_id)
    st.session_state.pop(NEW_RUN_OPEN, None)  # the form goes back to its default: folded under a run


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


# --- new run ------------------------------------------------------------------------------------


def schedule_choice(run_arch) -> tuple[dict | None, int | None]:
    """Return the Fine-tuning page's schedule (checked against the model's groups), or the default's epochs."""
    schedule_json = state.get_schedule_json()
    if not schedule_json:
        st.info(t("train.schedule_default", lr=f"{1e-3:g}"))
        epochs = st.number_input(t("train.epochs"), min_value=1, max_value=200, value=DEFAULT_EPOCHS, step=1,
                                 key="train_epochs", persist_state="session")
        return None, int(epochs)

    schedule = Schedule.from_json(schedule_json)
    with torch.device("meta"):
        model = build_resnet(run_arch)
    groups = list(schedule.group_params(model))
    if sorted(groups) != sorted(schedule.group_names):
        raise LabError("ft.err_groups_mismatch", schedule=", ".join(schedule.group_names), model=", ".join(groups))
    frozen = [g.name for g in schedule.groups if g.unfreeze_epoch != 0]
    st.success(t("train.schedule_from_ft", epochs=schedule.epochs, optimizer=schedule.optimizer,
                 lr=f"{schedule.lr_max:g}", frozen=", ".join(frozen) or "-"))
    return schedule.to_dict(), None


def training_options() -> dict:
    with st.expander(t("train.options_title")):
        columns = st.columns(3)
        batch_size = columns[0].selectbox(t("train.batch_size"), BATCH_SIZES, index=BATCH_SIZES.index(32),
                                          key="train_batch_size", persist_state="session")
        clip = columns[1].number_input(t("train.grad_clip"), min_value=0.0, max_value=100.0, value=0.0, step=0.5,
                                       key="train_clip", persist_state="session", help=t("train.grad_clip_help"))
        smoothing = columns[2].number_input(t("train.label_smoothing"), min_value=0.0, max_value=0.5, value=0.0,
                                            step=0.05, key="train_smoothing", persist_state="session")
        stop = columns[0].toggle(t("train.early_stopping"), value=True, key="train_early", persist_state="session",
                                 help=t("train.early_stopping_help"))
        monitor = columns[1].selectbox(t("train.monitor"), MONITORS, key="train_monitor", persist_state="session",
                                       format_func=lambda m: t(f"train.monitor_{m}"), disabled=not stop)
        patience = columns[2].number_input(t("train.patience"), min_value=1, max_value=50, value=3, step=1,
                                           key="train_patience", persist_state="session", disabled=not stop)
        min_delta = columns[0].number_input(t("train.min_delta"), min_value=0.0, max_value=1.0, value=0.0,
                                            step=0.001, format="%.3f", key="train_min_delta", persist_state="session",
                                            disabled=not stop)
        amp = columns[1].toggle(t("train.amp"), value=True, key="train_amp", persist_state="session",
                                help=t("train.amp_help"))
        channels_last = columns[2].toggle(t("train.channels_last"), value=True, key="train_channels_last",
                                          persist_state="session", help=t("train.channels_last_help"))
    return {
        "batch_size": int(batch_size),
        "grad_clip_norm": float(clip) or None,
        "label_smoothing": float(smoothing),
        "early_stopping": {"monitor": monitor, "patience": int(patience) if stop else None,
                           "min_delta": float(min_delta)},
        "amp": amp,
        "channels_last": channels_last,
        "log_every_steps": 10 if torch.cuda.is_available() else 1,
    }


def class_count(spec: dict) -> int:
    if spec.get("classes"):
        return len(spec["classes"])
    return len(_cached_dataset(json.dumps(spec, sort_keys=True)).classes)


def new_run_form() -> None:
    arch = state.get_arch_config()
    name = canonical_name(arch) or t("common.custom_model", depth=weighted_depth(arch))
    st.markdown(t("train.arch_used", name=name))

    st.subheader(t("train.data_header"))
    spec = pick_dataset(t, key="train_data")
    if spec is None:
        return
    pretrained = st.session_state.get(WEIGHTS_KIND_KEY) == "imagenet"
    preprocessing = pick_preprocessing(t, spec, key="train_prep", pretrained=pretrained,
                                       min_input_size=total_stride(arch))
    if preprocessing is None:
        return
    run_arch = arch.replace(num_classes=class_count(spec), in_channels=preprocessing["channels"],
                            input_size=preprocessing["input_size"])
    channels = t("train.channels_one") if run_arch.in_channels == 1 else t("train.channels_many",
                                                                             n=run_arch.in_channels)
    st.caption(t("train.arch_adapted", classes=run_arch.num_classes, size=run_arch.input_size, channels=channels))

    st.subheader(t("train.weights_header"))
    weights = pick_weights(t, run_arch, key="train_weights")

    st.subheader(t("train.schedule_header"))
    schedule, epochs = schedule_choice(run_arch)
    if schedule is not None and weights.get("kind") == "none":
        frozen = [group["name"] for group in schedule["groups"] if group["unfreeze_epoch"] != 0]
        if frozen:
            st.warning(t("train.frozen_random_warning", groups=", ".join(frozen)))
    options = training_options()

    run_name = st.text_input(t("train.run_name"), key="train_run_name", persist_state="session",
                             placeholder=t("train.run_name_placeholder"))
    if st.button(t("train.start"), type="primary", key="train_start"):
        config = {"architecture": run_arch.to_dict(), "schedule": schedule, "epochs": epochs, "data": spec,
                  "preprocessing": preprocessing, "weights": weights, "train": options}
        run_id = jobs.submit("train", config, name=run_name.strip() or None, owner=session_owner())
        jobs.ensure_worker()
        open_run(run_id)
        st.rerun()


# --- the current run -------------------------------------------------------------------------


def status_block(run: jobs.Run) -> None:
    icon = STATUS_ICONS.get(run.status, "")
    st.markdown(t("train.status_line", icon=icon, status=t(f"train.status_{run.status}"), run_id=run.id,
                  device=run.device))
    if run.status == jobs.QUEUED:
        st.info(t("train.queue_position", position=run.queue_position or 1))
    if run.status == jobs.RUNNING:
        if run.cancel_requested:
            st.warning(t("train.cancelling"))
        text = t("train.progress", done=run.progress_done, total=run.progress_total or "?",
                 elapsed=duration(time.time() - run.started if run.started else None), eta=duration(run.eta_s))
        if run.progress_total and run.progress_done >= run.progress_total:
            text = t("train.progress_finishing", total=run.progress_total)  # last evaluation and files
        st.progress(min(1.0, run.progress), text=text)
    if run.message_key:
        show = st.error if run.status == jobs.FAILED else st.info
        show(t(run.message_key, **run.message_params))


def cancel_run(run_id: str) -> None:
    jobs.cancel(run_id)


def resume_run(run_id: str) -> None:
    jobs.resume(run_id)


def live_charts(run_id: str) -> None:
    frame = jobs.metrics(run_id, max_points=MAX_POINTS)
    if frame.empty:
        st.caption(t("train.no_metrics_yet"))
        return
    train = frame[frame["series"] == "train"]
    val = frame[frame["series"] == "val"]
    left, right = st.columns(2)
    left.plotly_chart(run_charts.train_val_figure(t, train, val, "loss"), key="chart_loss")
    right.plotly_chart(run_charts.train_val_figure(t, train, val, "acc"), key="chart_acc")
    left.plotly_chart(run_charts.group_figure(t, train, "lr", "train.chart_lr", "train.axis_lr"), key="chart_lr")
    right.plotly_chart(run_charts.group_figure(t, train, "grad_norm", "train.chart_grad_norm",
                                               "train.axis_grad_norm"), key="chart_grad")
    left.plotly_chart(run_charts.throughput_figure(t, train), key="chart_throughput")


def run_panel(run_id: str, polling: bool) -> None:
    """Body of the fragment: redrawn every second while the run is queued or running."""
    run = jobs.get(run_id)
    if run is None:
        st.warning(t("train.run_missing", run_id=run_id))
        return
    if polling and not run.is_active:
        st.rerun()  # the whole page: stop polling, show the results
    status_block(run)
    columns = st.columns(4)
    if run.is_active:
        columns[0].button(t("train.cancel"), key="train_cancel", on_click=cancel_run, args=(run_id,),
                          disabled=run.cancel_requested)
    if run.status == jobs.INTERRUPTED:
        columns[0].button(t("train.resume"), key="train_resume", on_click=resume_run, args=(run_id,))
    live_charts(run_id)


def results(run: jobs.Run) -> None:
    """After a run: confusion matrix, per-class accuracy, highest-loss images, downloads."""
    run_dir = jobs.run_dir(run.id)
    evaluation_path = run_dir / "eval.json"
    if evaluation_path.is_file():
        evaluation = json.loads(evaluation_path.read_text(encoding="utf-8"))
        classes = [str(name) for name in evaluation["class_names"]]
        st.subheader(t("train.results_header"))
        st.caption(t("train.results_summary", acc=f"{evaluation['val_acc']:.1%}", loss=f"{evaluation['val_loss']:.4f}",
                     count=evaluation["count"]))
        left, right = st.columns(2)
        left.plotly_chart(run_charts.confusion_figure(t, evaluation["confusion"], classes), key="chart_confusion")
        right.plotly_chart(run_charts.per_class_figure(t, evaluation["per_class_acc"], classes), key="chart_per_class")
        top_losses(evaluation, classes, run_dir)
    downloads(run, run_dir)


def top_losses(evaluation: dict, classes: list[str], run_dir) -> None:
    items = evaluation.get("top_losses") or []
    if not items:
        return
    st.subheader(t("train.top_losses_header"))
    st.caption(t("train.top_losses_help"))
    for start in range(0, len(items), TOP_LOSS_COLUMNS):
        columns = st.columns(TOP_LOSS_COLUMNS)
        for column, item in zip(columns, items[start:start + TOP_LOSS_COLUMNS]):
            image_path = run_dir / item["image"]
            if not image_path.is_file():
                continue
            column.image(str(image_path), width="stretch")
            column.caption(t("train.top_loss_caption", true=classes[item["label"]], pred=classes[item["pred"]],
                             prob=f"{item['prob_pred']:.0%}", loss=f"{item['loss']:.2f}"))


def downloads(run: jobs.Run, run_dir) -> None:
    weights_path = checkpoints.final_weights_path(run_dir)
    config_path = run_dir / checkpoints.CONFIG_FILE
    columns = st.columns(3)
    if weights_path is not None:
        columns[0].download_button(t("train.download_weights"), data=weights_path.read_bytes,
                                   file_name=f"{run.id}-{weights_path.name}", mime="application/octet-stream",
                                   key="download_weights", on_click="ignore")
    if config_path.is_file():
        columns[1].download_button(t("train.download_config"), data=config_path.read_bytes,
                                   file_name=f"{run.id}-config.json", mime="application/json",
                                   key="download_config", on_click="ignore")
    columns[2].download_button(t("train.download_metrics"), data=lambda: metrics_csv(run.id),
                               file_name=f"{run.id}-metrics.csv", mime="text/csv", key="download_metrics",
                               on_click="ignore")


def metrics_csv(run_id: str) -> bytes:
    return jobs.metrics(run_id).to_csv(index=False).encode("utf-8")


def reuse_settings(run_id: str) -> None:
    """Make a run's network and plan this session's, e.g. after a reload started a new session."""
    run = jobs.get(run_id)
    if run is None:
        return
    state.set_arch_config(ResNetConfig.from_dict(run.config["architecture"]))
    schedule = run.config.get("schedule")
    state.set_schedule_json(Schedule.from_dict(schedule).to_json() if schedule else None)
    if not schedule and run.config.get("epochs"):
        st.session_state["train_epochs"] = int(run.config["epochs"])
    st.session_state[REUSED_KEY] = run_id


def reuse_button(run: jobs.Run) -> None:
    if st.session_state.get(REUSED_KEY) == run.id:
        st.caption(t("train.reused", run_id=run.id))
    st.button(t("train.reuse"), key="train_reuse", on_click=reuse_settings, args=(run.id,),
              help=t("train.reuse_help"))


def current_run_section(run_id: str) -> None:
    run = jobs.get(run_id)
    if run is None:
        st.warning(t("train.run_missing", run_id=run_id))
        st.session_state.pop(LAST_RUN, None)  # deleted meanwhile: the next visit starts afresh
        return
    st.header(t("train.current_header", name=run.name))
    reuse_button(run)
    polling = run.is_active
    st.fragment(run_every=1 if polling else None)(run_panel)(run_id, polling)
    if not polling:
        results(run)


# --- history -------------------------------------------------------------------------------------


def run_summary(run: jobs.Run) -> dict:
    path = jobs.run_dir(run.id) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def history_table(runs: list[jobs.Run]) -> pd.DataFrame:
    owner = session_owner()
    rows = []
    for run in runs:
        history = run_summary(run).get("history") or []
        best = max((epoch["val_acc"] for epoch in history), default=None)
        rows.append({
            t("train.col_name"): run.name,
            t("train.col_status"): t(f"train.status_{run.status}"),
            t("train.col_started"): time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created)),
            t("train.col_epochs"): len(history),
            t("train.col_best_acc"): "-" if best is None else f"{best:.1%}",  # Streamlit writes NaN as "None"
            t("train.col_owner"): t("train.owner_you") if run.owner == owner else (run.owner or "-"),
            t("train.col_device"): run.device,
            t("train.col_id"): run.id,
        })
    return pd.DataFrame(rows)


def delete_run(run_id: str) -> None:
    jobs.delete(run_id)
    if st.query_params.get(RUN_PARAM) == run_id:
        open_run(None)


def run_label(runs_by_id: dict[str, jobs.Run], run_id: str) -> str:
    name = runs_by_id[run_id].name
    return run_id if name == run_id else f"{name} · {run_id}"


def history_table_fragment() -> None:
    wide = {t(f"train.col_{name}"): st.column_config.TextColumn(width="medium") for name in ("name", "status", "id")}
    st.dataframe(history_table(jobs.list_runs(kind="train")), hide_index=True, width="stretch", column_config=wide)


def history_section(current: str | None) -> None:
    st.header(t("train.history_header"))
    runs = jobs.list_runs(kind="train")
    if not runs:
        st.caption(t("train.history_empty"))
        return
    refresh = HISTORY_REFRESH_S if any(run.is_active for run in runs) else None
    st.fragment(run_every=refresh)(history_table_fragment)()

    by_id = {run.id: run for run in runs}
    ids = list(by_id)
    columns = st.columns([3, 1])
    chosen = columns[0].selectbox(t("train.open_label"), ids, format_func=lambda r: run_label(by_id, r),
                                  key="train_open", index=ids.index(current) if current in by_id else 0)
    if columns[1].button(t("train.open"), key="train_open_button"):
        open_run(chosen)
        st.rerun()

    default = [current] if current in by_id else ids[:1]
    overlay = st.multiselect(t("train.overlay_label"), ids, default=default, format_func=lambda r: run_label(by_id, r),
                             key="train_overlay")
    if overlay:
        curves = {run_label(by_id, run_id): jobs.metrics(run_id, series="val") for run_id in overlay}
        left, right = st.columns(2)
        left.plotly_chart(run_charts.overlay_figure(t, curves, "acc"), key="chart_overlay_acc")
        right.plotly_chart(run_charts.overlay_figure(t, curves, "loss"), key="chart_overlay_loss")

    finished = [run.id for run in runs if not run.is_active]
    if finished:
        with st.expander(t("train.delete_title")):
            doomed = st.selectbox(t("train.delete_label"), finished, format_func=lambda r: run_label(by_id, r),
                                  key="train_delete_choice")
            if st.button(t("train.delete"), key="train_delete"):
                try:
                    delete_run(doomed)
                except LabError as error:
                    show_error(t, error)
                else:
                    st.rerun()


# --- page ----------------------------------------------------------------------------------------

st.title(t("train.title"))
st.markdown(t("train.intro"))
jobs.recover_orphans()  # after a server restart: runs whose worker is gone become "interrupted"

run_id = remembered_run_id(RUN_PARAM, LAST_RUN)
if run_id is not None:
    current_run_section(run_id)

# The expander keeps its state in the session, so it stays open while a finishing run redraws
# the page above it. A folded form is not built at all.
new_run = st.expander(t("train.new_header"), expanded=run_id is None, key=NEW_RUN_OPEN, on_change="rerun")
if new_run.open:
    with new_run:
        try:
            new_run_form()
        except LabError as error:
            show_error(t, error)

history_section(run_id)
