"""Fine-tuning: design which layer groups learn, from when and how fast, see it exactly before
training, store it for Entrenamiento, and find a peak LR with the LR finder."""

import json
import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import jobs
from core.architecture import format_count
from core.errors import LabError
from core.groups import default_groups
from core.lr_finder import MAX_STEPS, MIN_STEPS, RESULT_FILE, SERIES, FinderConfig
from core.models import ResNetConfig, build_resnet, canonical_name, total_stride
from core.schedule import (
    MAX_EPOCHS,
    MAX_STEPS_PER_EPOCH,
    OPTIMIZERS,
    PRESETS,
    GroupSchedule,
    Schedule,
    make_preset,
)
from ui import state
from ui.common import page_setup, show_error
from ui.dataset_picker import _cached_dataset, pick_dataset, pick_preprocessing
from ui.weights_picker import pick_weights

t = page_setup("ft.title")

DEFAULT_PRESET = "frozen_then_discriminative"
FINDER_RUN = "ft_finder_run"  # id of this session's latest LR finder run
FINDER_POLL_S = 2  # seconds between refreshes of a running finder's status
SEEDED_FOR = "ft_seeded_for"  # (architecture, schedule JSON) the widgets were last filled from
PENDING_LR_MAX = "ft_pending_lr_max"  # an LR finder suggestion to put into the lr_max input
UPLOAD_ERROR = "ft_upload_error"
PRESET_ERROR = "ft_preset_error"
NOTICE = "ft_notice"
GROUPS_DATA = "ft_groups_data"  # the rows the group editor starts from
EDITOR_VERSION = "ft_editor_version"  # bumped to reset the group editor when the rows are replaced
WARMUP_UNITS = ("steps", "epochs")
FROZEN_BN_CHOICES = ("eval", "train")
GROUP_COLUMNS = ("name", "unfreeze_epoch", "lr_max", "modules")
FROZEN_COLOR, TRAINABLE_COLOR, SUGGESTION_COLOR = "#99aabb", "#e8743b", "#22aa77"
EPOCH_LINE, WARMUP_LINE = "#bbbbbb", "#888888"


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_model(config_json: str):
    """Build the architecture's network once; it is only read (group and parameter names), never mutated."""
    return build_resnet(ResNetConfig.from_dict(json.loads(config_json)))


# --- schedule <-> widgets ----------------------------------------------------------------------


def seed_widgets(schedule: Schedule) -> None:
    """Fill every control from `schedule` (before the widgets are drawn)."""
    warmup_in_epochs = schedule.warmup_epochs > 0
    st.session_state.update({
        "ft_epochs": schedule.epochs,
        "ft_steps_per_epoch": schedule.steps_per_epoch,
        "ft_optimizer": schedule.optimizer,
        "ft_momentum": schedule.momentum,
        "ft_weight_decay": schedule.weight_decay,
        "ft_no_decay": schedule.no_decay_bn_bias,
        "ft_frozen_bn": schedule.frozen_bn,
        "ft_lr_max": schedule.lr_max,
        "ft_lr_min": schedule.lr_min,
        "ft_lr_decay": schedule.lr_decay,
        "ft_warmup_unit": "epochs" if warmup_in_epochs else "steps",
        "ft_warmup": schedule.warmup_epochs if warmup_in_epochs else schedule.warmup_steps,
        "ft_warmup_start": schedule.warmup_start_factor,
    })
    st.session_state[GROUPS_DATA] = pd.DataFrame(
        [{"name": g.name, "unfreeze_epoch": g.unfreeze_epoch, "lr_max": g.lr_max, "modules": ", ".join(g.modules)}
         for g in schedule.groups],
        columns=GROUP_COLUMNS,
    ).astype({"unfreeze_epoch": "Int64", "lr_max": "Float64"})
    st.session_state[EDITOR_VERSION] = st.session_state.get(EDITOR_VERSION, 0) + 1


def _optional(value, kind):
    return None if value is None or pd.isna(value) else kind(value)


def groups_from_rows(rows: pd.DataFrame) -> tuple[GroupSchedule, ...]:
    groups = []
    for row in rows.to_dict("records"):
        modules = tuple(m.strip() for m in str(row.get("modules") or "").split(",") if m.strip())
        groups.append(GroupSchedule(
            name=str(row.get("name") or "").strip(),
            unfreeze_epoch=_optional(row.get("unfreeze_epoch"), int),
            lr_max=_optional(row.get("lr_max"), float),
            modules=modules,
        ))
    return tuple(groups)


def schedule_from_widgets(rows: pd.DataFrame) -> Schedule:
    """Build the schedule the controls describe; raise LabError when it is invalid."""
    s = st.session_state
    in_epochs = s["ft_warmup_unit"] == "epochs"
    return Schedule(
        groups=groups_from_rows(rows),
        epochs=int(s["ft_epochs"]),
        steps_per_epoch=int(s["ft_steps_per_epoch"]),
        optimizer=s["ft_optimizer"],
        lr_max=float(s["ft_lr_max"]),
        lr_min=float(s["ft_lr_min"]),
        lr_decay=float(s["ft_lr_decay"]),
        warmup_steps=0 if in_epochs else int(s["ft_warmup"]),
        warmup_epochs=int(s["ft_warmup"]) if in_epochs else 0,
        warmup_start_factor=float(s["ft_warmup_start"]),
        momentum=float(s["ft_momentum"]),
        weight_decay=float(s["ft_weight_decay"]),
        no_decay_bn_bias=bool(s["ft_no_decay"]),
        frozen_bn=s["ft_frozen_bn"],
    )


def stored_schedule(model) -> Schedule | None:
    """Return the schedule kept for Entrenamiento, if there is one and it fits this architecture."""
    text = state.get_schedule_json()
    if not text:
        return None
    try:
        schedule = Schedule.from_json(text)
        schedule.group_params(model)
        return schedule
    except LabError:
        return None


def ensure_seeded(model, arch_json: str) -> None:
    """Fill the controls on a first visit, after another page changed the architecture, or when
    the controls were dropped (Streamlit drops the widget values of a page that is not shown)."""
    key = (arch_json, state.get_schedule_json())
    if "ft_epochs" in st.session_state and st.session_state.get(SEEDED_FOR) == key:
        return
    schedule = stored_schedule(model)
    if schedule is None:
        if state.get_schedule_json():
            st.session_state[NOTICE] = "ft.notice_reset_for_arch"
        schedule = make_preset(DEFAULT_PRESET, list(default_groups(model)))
        state.set_schedule_json(schedule.to_json())
    seed_widgets(schedule)
    st.session_state[SEEDED_FOR] = (arch_json, state.get_schedule_json())


def apply_preset(group_names: list[str]) -> None:
    s = st.session_state
    try:
        schedule = make_preset(s["ft_preset"], group_names, epochs=int(s["ft_epochs"]),
                               steps_per_epoch=int(s["ft_steps_per_epoch"]),
                               backbone_epoch=int(s["ft_backbone_epoch"]))
    except LabError as error:
        s[PRESET_ERROR] = (error.key, error.params)
        return
    s.pop(PRESET_ERROR, None)
    seed_widgets(schedule)


def on_upload(model) -> None:
    """Load an uploaded schedule. On an invalid file keep everything as it was and show why."""
    uploaded = st.session_state.get("ft_upload")
    st.session_state.pop(UPLOAD_ERROR, None)
    if uploaded is None:
        return
    try:
        schedule = Schedule.from_json(uploaded.getvalue())
        schedule.group_params(model)
    except LabError as error:
        st.session_state[UPLOAD_ERROR] = (error.key, error.params)
        return
    seed_widgets(schedule)
    st.session_state[NOTICE] = "ft.notice_uploaded"


# --- controls --------------------------------------------------------------------------------------


def preset_controls(group_names: list[str]) -> None:
    st.subheader(t("ft.presets_header"))
    left, right = st.columns([2, 1])
    with left:
        st.selectbox(t("ft.preset"), PRESETS, key="ft_preset", format_func=lambda p: t(f"ft.preset_{p}"))
        st.caption(t(f"ft.preset_{st.session_state['ft_preset']}_help"))
    with right:
        st.number_input(t("ft.backbone_epoch"), min_value=0, max_value=MAX_EPOCHS, key="ft_backbone_epoch",
                        help=t("ft.backbone_epoch_help"),
                        disabled=st.session_state["ft_preset"] != "backbone_at_epoch")
        st.button(t("ft.apply_preset"), key="ft_apply_preset", on_click=apply_preset, args=(group_names,),
                  type="primary")
    if PRESET_ERROR in st.session_state:
        key, params = st.session_state[PRESET_ERROR]
        st.error(t(key, **params))


def length_controls() -> None:
    st.subheader(t("ft.length_header"))
    left, right = st.columns(2)
    left.number_input(t("ft.epochs"), min_value=1, max_value=MAX_EPOCHS, step=1, key="ft_epochs")
    right.number_input(t("ft.steps_per_epoch"), min_value=1, max_value=MAX_STEPS_PER_EPOCH, step=1,
                       key="ft_steps_per_epoch", help=t("ft.steps_per_epoch_help"))


def lr_controls() -> None:
    st.subheader(t("ft.lr_header"))
    controls, formulas = st.columns([3, 2])
    with controls:
        st.number_input(t("ft.lr_max"), min_value=0.0, format="%.2e", step=1e-4, key="ft_lr_max",
                        help=t("ft.lr_max_help"))
        st.number_input(t("ft.lr_min"), min_value=0.0, format="%.2e", step=1e-5, key="ft_lr_min",
                        help=t("ft.lr_min_help"))
        st.number_input(t("ft.lr_decay"), min_value=0.0, max_value=1.0, format="%.3g", step=0.05,
                        key="ft_lr_decay", help=t("ft.lr_decay_help"))
    with formulas:
        st.latex(r"\eta_{\max,g} = \eta_{\max}\,\gamma^{\,d_g}")
        st.latex(r"\eta_{\min,g} = \eta_{\min}\,\frac{\eta_{\max,g}}{\eta_{\max}}")
        st.caption(t("ft.lr_formula_caption"))


def warmup_controls() -> None:
    st.subheader(t("ft.warmup_header"))
    controls, formulas = st.columns([3, 2])
    with controls:
        st.radio(t("ft.warmup_unit"), WARMUP_UNITS, key="ft_warmup_unit", horizontal=True,
                 format_func=lambda unit: t(f"ft.warmup_unit_{unit}"))
        st.number_input(t("ft.warmup_length"), min_value=0, step=1, key="ft_warmup")
        st.number_input(t("ft.warmup_start"), min_value=0.0, max_value=1.0, format="%.3g", step=0.05,
                        key="ft_warmup_start", help=t("ft.warmup_start_help"))
    with formulas:
        st.latex(r"s < W:\quad \eta_s = \eta_{\max,g}\left(f_0 + (1-f_0)\,\frac{s}{W}\right)")
        st.latex(r"\eta_t = \eta_{\min,g} + \tfrac12(\eta_{\max,g}-\eta_{\min,g})"
                 r"\left(1+\cos\frac{\pi t}{T}\right)")
        st.caption(t("ft.cosine_formula_caption"))


def optimizer_controls() -> None:
    st.subheader(t("ft.optimizer_header"))
    controls, formulas = st.columns([3, 2])
    optimizer = st.session_state["ft_optimizer"]
    with controls:
        st.radio(t("ft.optimizer"), OPTIMIZERS, key="ft_optimizer", horizontal=True,
                 format_func=lambda name: t(f"ft.optimizer_{name}"))
        st.number_input(t("ft.momentum"), min_value=0.0, max_value=1.0, format="%.3g", step=0.01,
                        key="ft_momentum", disabled=optimizer != "sgd")
        st.number_input(t("ft.weight_decay"), min_value=0.0, max_value=1.0, format="%.1e", step=1e-5,
                        key="ft_weight_decay", help=t("ft.weight_decay_help"))
        st.checkbox(t("ft.no_decay"), key="ft_no_decay", help=t("ft.no_decay_help"))
        st.radio(t("ft.frozen_bn"), FROZEN_BN_CHOICES, key="ft_frozen_bn",
                 format_func=lambda mode: t(f"ft.frozen_bn_{mode}"), help=t("ft.frozen_bn_help"))
    with formulas:
        if optimizer == "sgd":
            st.latex(r"v \leftarrow \mu v + \nabla L + \lambda\theta,\qquad \theta \leftarrow \theta - \eta v")
        else:
            st.latex(r"\theta \leftarrow \theta - \eta\left(\frac{\hat m}{\sqrt{\hat v}+\epsilon}"
                     r" + \lambda\theta\right)")
        st.caption(t(f"ft.optimizer_{optimizer}_caption"))


def group_controls() -> pd.DataFrame:
    st.subheader(t("ft.groups_header"))
    st.caption(t("ft.groups_caption"))
    return st.data_editor(
        st.session_state[GROUPS_DATA],
        key=f"ft_groups_editor_{st.session_state[EDITOR_VERSION]}",
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        column_config={
            "name": st.column_config.TextColumn(t("ft.col_group"), required=True),
            "unfreeze_epoch": st.column_config.NumberColumn(t("ft.col_unfreeze"), step=1, format="%d",
                                                            help=t("ft.col_unfreeze_help")),
            "lr_max": st.column_config.NumberColumn(t("ft.col_own_lr"), format="%.2e",
                                                    help=t("ft.col_own_lr_help")),
            "modules": st.column_config.TextColumn(t("ft.col_modules"), help=t("ft.col_modules_help")),
        },
    )


# --- preview ----------------------------------------------------------------------------------------


def lr_chart(schedule: Schedule, log_scale: bool) -> go.Figure:
    steps, curves = schedule.lr_curves()
    figure = go.Figure()
    for name, values in curves.items():
        figure.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=name, connectgaps=False))
    for epoch in range(1, schedule.epochs):
        figure.add_vline(x=epoch * schedule.steps_per_epoch, line=dict(width=1, dash="dot", color=EPOCH_LINE))
    if schedule.n_warmup_steps:
        figure.add_vline(x=schedule.n_warmup_steps, line=dict(width=1, dash="dash", color=WARMUP_LINE),
                         annotation_text=t("ft.chart_warmup_end"))
    figure.update_layout(title=t("ft.chart_lr_title"), xaxis_title=t("ft.chart_step"),
                         yaxis_title=t("ft.chart_lr"), height=380, margin=dict(t=50, b=40),
                         legend_title_text=t("ft.chart_group"))
    figure.update_yaxes(type="log" if log_scale else "linear", exponentformat="e")
    return figure


def gantt_chart(schedule: Schedule) -> go.Figure:
    """Frozen and trainable stretch of every group over the epochs, input side at the bottom."""
    names = schedule.group_names
    starts = [schedule.group(n).unfreeze_epoch for n in names]
    frozen = [schedule.epochs if s is None else s for s in starts]
    trainable = [0 if s is None else schedule.epochs - s for s in starts]
    figure = go.Figure()
    figure.add_trace(go.Bar(y=names, x=frozen, base=[0] * len(names), orientation="h",
                            name=t("ft.chart_frozen"), marker=dict(color=FROZEN_COLOR)))
    figure.add_trace(go.Bar(y=names, x=trainable, base=frozen, orientation="h",
                            name=t("ft.chart_trainable"), marker=dict(color=TRAINABLE_COLOR)))
    figure.update_layout(title=t("ft.chart_gantt_title"), barmode="overlay", height=80 + 36 * len(names),
                         xaxis_title=t("ft.chart_epoch"), margin=dict(t=50, b=40))
    figure.update_xaxes(range=[0, schedule.epochs], dtick=1)
    return figure


def trainable_chart(schedule: Schedule, counts: dict[str, int]) -> go.Figure:
    per_epoch = schedule.trainable_parameters_by_epoch(counts)
    figure = go.Figure(go.Bar(x=list(range(schedule.epochs)), y=per_epoch, name=t("ft.chart_trainable"),
                              marker=dict(color=TRAINABLE_COLOR)))
    figure.update_layout(title=t("ft.chart_params_title"), xaxis_title=t("ft.chart_epoch"),
                         yaxis_title=t("ft.chart_params"), height=300, margin=dict(t=50, b=40))
    figure.update_xaxes(dtick=1)
    return figure


def group_table(schedule: Schedule, layer_groups: dict[str, list[str]], groups_params: dict[str, list[str]],
                counts: dict[str, int]) -> pd.DataFrame:
    rows = []
    for name in schedule.group_names:
        epoch = schedule.group(name).unfreeze_epoch
        rows.append({
            t("ft.col_group"): name,
            t("ft.col_modules"): ", ".join(layer_groups[name]),
            t("ft.col_tensors"): len(groups_params[name]),
            t("ft.col_params"): format_count(counts[name]),
            t("ft.col_unfreeze"): t("ft.never") if epoch is None else str(epoch),
            t("ft.col_peak_lr"): f"{schedule.group_lr_max(name):.3g}",
            t("ft.col_final_lr"): f"{schedule.group_lr_min(name):.3g}",
            t("ft.col_multiplier"): f"{schedule.multiplier(name):.3g}",
        })
    return pd.DataFrame(rows)


def preview(schedule: Schedule, model) -> None:
    layer_groups = schedule.layer_groups(model)
    groups_params = schedule.group_params(model)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    counts = {g: sum(sizes[p] for p in names) for g, names in groups_params.items()}
    per_epoch = schedule.trainable_parameters_by_epoch(counts)

    st.header(t("ft.preview_header"))
    columns = st.columns(4)
    columns[0].metric(t("ft.metric_total_steps"), format_count(schedule.total_steps))
    columns[1].metric(t("ft.metric_warmup_steps"), format_count(schedule.n_warmup_steps))
    columns[2].metric(t("ft.metric_trainable_start"), format_count(per_epoch[0]))
    columns[3].metric(t("ft.metric_trainable_end"), format_count(per_epoch[-1]))

    log_scale = st.toggle(t("ft.log_scale"), key="ft_log_scale", value=True)
    st.plotly_chart(lr_chart(schedule, log_scale), width="stretch", key="ft_lr_chart")
    st.caption(t("ft.chart_lr_caption"))
    left, right = st.columns(2)
    left.plotly_chart(gantt_chart(schedule), width="stretch", key="ft_gantt_chart")
    right.plotly_chart(trainable_chart(schedule, counts), width="stretch", key="ft_params_chart")
    st.subheader(t("ft.table_header"))
    st.dataframe(group_table(schedule, layer_groups, groups_params, counts), hide_index=True,
                 width="stretch")


def save_and_load(schedule: Schedule, model) -> None:
    st.header(t("ft.file_header"))
    left, right = st.columns(2)
    left.download_button(t("ft.download"), data=schedule.to_json(), file_name="schedule.json",
                         mime="application/json", key="ft_download")
    left.caption(t("ft.download_caption"))
    right.file_uploader(t("ft.upload"), type=["json"], key="ft_upload", on_change=on_upload, args=(model,))
    if UPLOAD_ERROR in st.session_state:
        key, params = st.session_state[UPLOAD_ERROR]
        right.error(t(key, **params))


# --- LR finder -------------------------------------------------------------------------------------


def class_count(spec: dict) -> int:
    """Count the classes a run on `spec` trains on: the chosen ones, or all of the dataset's."""
    if spec.get("classes"):
        return len(spec["classes"])
    return len(_cached_dataset(json.dumps(spec, sort_keys=True)).classes)


def finder_data_and_weights() -> dict | None:
    """Render the same dataset, preprocessing and weights pickers as Entrenamiento; return the
    job config's data part, or None while the data is not usable yet."""
    architecture = state.get_arch_config()
    spec = pick_dataset(t, key="ft_finder_data")
    if spec is None:
        return None
    pretrained = st.session_state.get("ft_finder_weights_kind") == "imagenet"
    preprocessing = pick_preprocessing(t, spec, key="ft_finder_prep", pretrained=pretrained,
                                       min_input_size=total_stride(architecture))
    if preprocessing is None:
        return None
    run_arch = architecture.replace(num_classes=class_count(spec), in_channels=preprocessing["channels"],
                                    input_size=preprocessing["input_size"])
    weights = pick_weights(t, run_arch, key="ft_finder_weights")
    return {"architecture": run_arch.to_dict(), "data": spec, "preprocessing": preprocessing, "weights": weights}


def finder_settings(schedule: Schedule) -> None:
    defaults = {"ft_finder_batch": 32, "ft_finder_lr_start": 1e-7, "ft_finder_lr_end": 1.0,
                "ft_finder_steps": 100, "ft_finder_epoch": 0}
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)

    first, second, third = st.columns(3)
    first.number_input(t("ft.finder_lr_start"), min_value=0.0, format="%.1e", key="ft_finder_lr_start")
    first.number_input(t("ft.finder_lr_end"), min_value=0.0, format="%.1e", key="ft_finder_lr_end")
    second.slider(t("ft.finder_steps"), MIN_STEPS, MAX_STEPS, key="ft_finder_steps")
    second.number_input(t("ft.finder_batch"), min_value=1, max_value=1024, key="ft_finder_batch")
    third.number_input(t("ft.finder_epoch"), min_value=0, max_value=MAX_EPOCHS, key="ft_finder_epoch",
                       help=t("ft.finder_epoch_help"))
    epoch = min(int(st.session_state["ft_finder_epoch"]), schedule.epochs - 1)
    third.caption(t("ft.finder_groups", groups=", ".join(schedule.trainable_groups(epoch))))


def finder_config(schedule: Schedule, data_part: dict) -> dict:
    """Build the "lr_find" job's config from the finder controls and the current schedule."""
    s = st.session_state
    finder = FinderConfig(lr_start=float(s["ft_finder_lr_start"]), lr_end=float(s["ft_finder_lr_end"]),
                          num_steps=int(s["ft_finder_steps"]), at_epoch=int(s["ft_finder_epoch"]))
    if finder.at_epoch >= schedule.epochs:
        raise LabError("ft.err_finder_epoch", epoch=finder.at_epoch, last=schedule.epochs - 1)
    return {**data_part, "schedule": schedule.to_dict(), "train": {"batch_size": int(s["ft_finder_batch"])},
            "lr_find": finder.to_dict()}


def finder_controls(schedule: Schedule) -> None:
    st.header(t("ft.finder_header"))
    st.caption(t("ft.finder_intro"))
    st.subheader(t("ft.finder_data_header"))  # the pickers hold expanders, which cannot be nested
    data_part = finder_data_and_weights()
    st.subheader(t("ft.finder_sweep_header"))
    finder_settings(schedule)

    if st.button(t("ft.finder_run"), key="ft_finder_run_button", type="primary", disabled=data_part is None):
        try:
            run_id = jobs.submit("lr_find", finder_config(schedule, data_part), name=t("ft.finder_run_name"))
            jobs.ensure_worker()
            st.session_state[FINDER_RUN] = run_id
        except LabError as error:
            show_error(t, error)

    run_id = st.session_state.get(FINDER_RUN)
    if run_id:
        run = jobs.get(run_id)
        finder_status(run_id, run_every=FINDER_POLL_S if run is not None and run.is_active else None)


def finder_chart(frame: pd.DataFrame, suggestion: dict | None, finder: FinderConfig) -> go.Figure:
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=frame["lr"], y=frame["loss"], mode="markers", name=t("ft.finder_loss"),
                                marker=dict(size=4, color=FROZEN_COLOR)))
    figure.add_trace(go.Scatter(x=frame["lr"], y=frame["smoothed_loss"], mode="lines",
                                name=t("ft.finder_smoothed"), line=dict(color=TRAINABLE_COLOR)))
    if suggestion and suggestion.get("index") is not None and suggestion["index"] < len(frame):
        point = frame.iloc[suggestion["index"]]
        figure.add_trace(go.Scatter(x=[point["lr"]], y=[point["smoothed_loss"]], mode="markers",
                                    name=t("ft.finder_suggested_point"),
                                    marker=dict(size=12, color=SUGGESTION_COLOR, symbol="star")))
    figure.update_layout(title=t("ft.finder_chart_title"), xaxis_title=t("ft.finder_chart_lr"),
                         yaxis_title=t("ft.finder_loss"), height=380, margin=dict(t=50, b=40))
    # The whole sweep's range from the start, so a running sweep fills the axis instead of
    # rescaling it at every refresh. Plotly takes the range of a log axis in log10 units.
    figure.update_xaxes(type="log", exponentformat="e",
                        range=[math.log10(finder.lr_start), math.log10(finder.lr_end)])
    return figure


def explain_suggestion(suggestion: dict) -> None:
    method = suggestion["method"]
    if method == "none":
        st.warning(t("ft.finder_no_suggestion"))
        return
    st.success(t(f"ft.finder_explain_{method}", lr=f"{suggestion['lr']:.2e}",
                 lr_min_loss=f"{suggestion['lr_min_loss']:.2e}",
                 lr_min_div_10=f"{suggestion['lr_min_div_10']:.2e}"))
    if st.button(t("ft.finder_apply", lr=f"{suggestion['lr']:.2e}"), key="ft_finder_apply"):
        st.session_state[PENDING_LR_MAX] = suggestion["lr"]
        st.rerun()


def finder_status_body(run_id: str) -> None:
    run = jobs.get(run_id)
    if run is None:
        st.session_state.pop(FINDER_RUN, None)
        return
    st.caption(t(f"ft.finder_status_{run.status}", run_id=run.id))
    if run.is_active:
        st.progress(run.progress, text=t("ft.finder_progress", done=run.progress_done, total=run.progress_total))
        if st.button(t("ft.finder_cancel"), key="ft_finder_cancel"):
            jobs.cancel(run_id)
    if run.message_key:
        (st.error if run.status == jobs.FAILED else st.info)(t(run.message_key, **run.message_params))

    frame = jobs.metrics(run_id, series=SERIES)
    result_path = jobs.run_dir(run_id) / RESULT_FILE
    suggestion = json.loads(result_path.read_text(encoding="utf-8"))["suggestion"] if result_path.is_file() else None
    if not frame.empty:
        finder = FinderConfig.from_dict(run.config.get("lr_find"))
        st.plotly_chart(finder_chart(frame, suggestion, finder), width="stretch", key="ft_finder_chart")
    if suggestion is not None:
        explain_suggestion(suggestion)
    if not run.is_active and st.session_state.get("ft_finder_was_active"):
        st.session_state["ft_finder_was_active"] = False
        st.rerun()  # the whole page once, so polling stops
    st.session_state["ft_finder_was_active"] = run.is_active


def finder_status(run_id: str, run_every: int | None) -> None:
    """Show the run's status and curve, refreshed while it runs without rerunning the rest of the page."""
    st.fragment(run_every=run_every)(finder_status_body)(run_id)


# --- the page ---------------------------------------------------------------------------------------


architecture = state.get_arch_config()
arch_json = json.dumps(architecture.to_dict(), sort_keys=True)
model = cached_model(arch_json)
group_names = list(default_groups(model))
ensure_seeded(model, arch_json)
if PENDING_LR_MAX in st.session_state:
    st.session_state["ft_lr_max"] = st.session_state.pop(PENDING_LR_MAX)
st.session_state.setdefault("ft_preset", DEFAULT_PRESET)
st.session_state.setdefault("ft_backbone_epoch", 1)

st.title(t("ft.title"))
st.caption(t("ft.intro", model=canonical_name(architecture) or t("ft.custom_model")))
if NOTICE in st.session_state:
    st.info(t(st.session_state.pop(NOTICE)))

preset_controls(group_names)
length_controls()
lr_controls()
warmup_controls()
optimizer_controls()
rows = group_controls()

try:
    schedule = schedule_from_widgets(rows)
    schedule.group_params(model)
except LabError as error:
    show_error(t, error)
    st.warning(t("ft.showing_last_valid"))
    schedule = stored_schedule(model) or make_preset(DEFAULT_PRESET, group_names)
else:
    state.set_schedule_json(schedule.to_json())
    st.session_state[SEEDED_FOR] = (arch_json, state.get_schedule_json())
    st.caption(t("ft.stored_for_training"))

preview(schedule, model)
save_and_load(schedule, model)
finder_controls(schedule)
