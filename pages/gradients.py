"""Gradientes: gradient flow with and without skip connections, shattered gradients, degradation.

The probe and the shattered-gradients panel run in this process, one forward and backward pass
per step, cached per configuration. The degradation demo trains four networks, so it runs as a
background job and this page only polls it.
"""

import dataclasses
import json
import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import degradation, jobs
from core.device import pick_device
from core.errors import LabError
from core.gradients import (
    MAX_STEPS,
    STEM,
    Finding,
    ProbeResult,
    ProbeSettings,
    compare,
    layer_findings,
    signal_findings,
    step_findings,
)
from core.models import IMAGENET_STAGES, ResNetConfig, canonical_name, cifar_config, imagenet_config
from core.shattered import shattered
from ui import state
from ui.common import page_setup, remembered_run_id, show_error, show_run_id

SECTIONS = ("probe", "shattered", "degradation")
VARIANTS = ("residual", "plain")
COLOURS = {"residual": "#1f77b4", "plain": "#d62728"}
CIFAR_DEPTHS = {"basic": (8, 14, 20, 32, 44, 56, 110), "bottleneck": (11, 20, 29, 56, 110, 164)}
IMAGENET_DEPTHS = tuple(IMAGENET_STAGES)
INPUT_SIZES = (32, 64, 112, 224)
BATCH_SIZES = (8, 16, 32, 64, 128)
LEARNING_RATES = (0.001, 0.01, 0.1, 0.5)
SHATTERED_POINTS = (32, 64, 128, 256)
SMOOTHING_STEPS = 10  # moving average of the degradation curves, in steps
RUN_PARAM = "deg_run"  # query parameter holding the degradation run id: a reload keeps it
SIDE_LEGEND = {"orientation": "v", "x": 1.02, "y": 1}  # beside the plot: never over tick labels or axis titles
SECTION_PARAM = "section"  # query parameter opening a section, e.g. from a glossary link
LAST_RUN = "grad_deg_last_run"  # the session's degradation run, brought back after a page switch
REQUEST = "grad_request"  # session key of the configuration last submitted

t = page_setup("grad.title")


# --- the request: what to probe -------------------------------------------------------------

def _default_request() -> dict:
    return {"arch": cifar_config(20).to_dict(), "settings": dataclasses.asdict(ProbeSettings(steps=5))}


def _request() -> tuple[ResNetConfig, ProbeSettings]:
    request = st.session_state.setdefault(REQUEST, _default_request())
    return ResNetConfig.from_dict(request["arch"]), ProbeSettings(**request["settings"])


def _family_widgets() -> tuple[str, str]:
    """Family and block sit outside the form: they decide which depths the form offers."""
    columns = st.columns(2)
    family = columns[0].radio(t("grad.family"), ("cifar", "imagenet"), key="grad_family", persist_state="session",
                              horizontal=True, format_func=lambda value: t(f"grad.family_{value}"))
    block = "basic"
    if family == "cifar":
        block = columns[1].radio(t("grad.block"), ("basic", "bottleneck"), key="grad_block", persist_state="session",
                                 horizontal=True, format_func=lambda value: t(f"grad.block_{value}"))
    return family, block


def _probe_form(family: str, block: str) -> None:
    arch_name = canonical_name(state.get_arch_config()) or t("grad.custom_model")
    with st.form("grad_probe_form"):
        use_arch = st.checkbox(t("grad.use_arch", name=arch_name), key="grad_use_arch", persist_state="session",
                               help=t("grad.use_arch_help"))
        columns = st.columns(4)
        if family == "cifar":
            depth = columns[0].selectbox(t("grad.depth"), CIFAR_DEPTHS[block], index=2, key=f"grad_depth_{block}",
                                         persist_state="session")
        else:
            depth = columns[0].selectbox(t("grad.depth"), IMAGENET_DEPTHS, key="grad_depth_imagenet",
                                         persist_state="session", help=t("grad.imagenet_block_help"))
        # Applies to the model from Arquitectura too: a 224-px probe of a deep net is slow on a CPU.
        input_size = columns[0].selectbox(t("grad.input_size"), INPUT_SIZES, index=0 if family == "cifar" else 1,
                                          key=f"grad_input_size_{family}", persist_state="session",
                                          help=t("grad.input_size_help"))
        batch_size = columns[1].select_slider(t("grad.batch_size"), BATCH_SIZES, value=32, key="grad_batch_size",
                                              persist_state="session")
        data = columns[1].radio(t("grad.data"), ("digits", "noise"), key="grad_data", persist_state="session",
                                format_func=lambda value: t(f"grad.data_{value}"))
        batch_norm = columns[2].toggle(t("grad.batch_norm"), value=True, key="grad_batch_norm", persist_state="session")
        init = columns[2].selectbox(t("grad.init"), ("he", "default", "zero_gamma", "fixup"), key="grad_init",
                                    persist_state="session",
                                    format_func=lambda value: t(f"grad.init_{value}"), help=t("grad.init_help"))
        steps = columns[3].number_input(t("grad.steps"), 0, MAX_STEPS, 5, key="grad_steps", persist_state="session",
                                        help=t("grad.steps_help"))
        lr = columns[3].select_slider(t("grad.lr"), LEARNING_RATES, value=0.1, key="grad_lr", persist_state="session")
        seed = columns[3].number_input(t("grad.seed"), 0, 10_000, 0, key="grad_seed", persist_state="session")
        submitted = st.form_submit_button(t("grad.run"), type="primary", key="grad_run")

    if not submitted:
        return
    if use_arch:
        arch = state.get_arch_config()
    elif family == "cifar":
        arch = cifar_config(depth, block=block)
    else:
        arch = imagenet_config(depth, num_classes=10)
    arch = arch.replace(batch_norm=batch_norm, init=init, input_size=input_size)
    settings = ProbeSettings(batch_size=batch_size, data=data, seed=int(seed), steps=int(steps), lr=lr)
    st.session_state[REQUEST] = {"arch": arch.to_dict(), "settings": dataclasses.asdict(settings)}


@st.cache_data(max_entries=16, show_spinner=False)
def _cached_compare(arch_json: str, settings_json: str, device: str) -> dict[str, list[ProbeResult]]:
    """Probe results keyed on the configuration (as JSON) and the device."""
    import torch

    arch = ResNetConfig.from_dict(json.loads(arch_json))
    settings = ProbeSettings(**json.loads(settings_json))
    return compare(arch, settings, torch.device(device))


@st.cache_data(max_entries=16, show_spinner=False)
def _cached_shattered(arch_json: str, settings_json: str, points: int) -> dict:
    arch = ResNetConfig.from_dict(json.loads(arch_json))
    settings = ProbeSettings(**json.loads(settings_json))
    return shattered(arch, settings, num_points=points)


def _keys(arch: ResNetConfig, settings: ProbeSettings) -> tuple[str, str]:
    return json.dumps(arch.to_dict(), sort_keys=True), json.dumps(dataclasses.asdict(settings), sort_keys=True)


# --- text ------------------------------------------------------------------------------------

def _say(finding: Finding) -> str:
    """Translate a finding; network names and places are catalog entries too."""
    params = dict(finding.params)
    if "net" in params:
        params["net"] = t(f"grad.net_{params['net']}")
    if "where" in params:
        params["where"] = t(f"grad.where_{params['where']}")
    return t(finding.key, **params)


def _explain(findings: list[Finding], general_key: str) -> None:
    st.caption(t(general_key))
    st.markdown("\n".join(f"- {_say(finding)}" for finding in findings))


def _model_line(arch: ResNetConfig, settings: ProbeSettings, place) -> None:
    """Write what was measured into `place`, filled once the results exist, so it never names a
    network above the previous network's charts."""
    name = canonical_name(arch.replace(skip=True)) or t("grad.custom_model")
    place.caption(t("grad.model_line", name=name, block=t(f"grad.block_{arch.block}"),
                 bn=t("grad.yes") if arch.batch_norm else t("grad.no"), init=t(f"grad.init_{arch.init}"),
                 batch=settings.batch_size, data=t(f"grad.data_{settings.data}"), steps=settings.steps,
                 lr=settings.lr, size=arch.input_size))


# --- charts ----------------------------------------------------------------------------------

def _positive_or_none(values: list[float]) -> list[float | None]:
    """Replace zeros and non-finite values by None: a log axis cannot show them (the page counts them)."""
    return [value if value > 0 and math.isfinite(value) else None for value in values]


def _layer_chart(results: dict[str, list[ProbeResult]], shown: list[str], step: int) -> None:
    figure = go.Figure()
    zero_counts = {}
    for variant in shown:
        result = results[variant][min(step, len(results[variant]) - 1)]
        if result.diverged:
            continue
        norms = result.main_path_norms()
        zero_counts[variant] = sum(1 for value in norms if value == 0.0)
        figure.add_trace(go.Scatter(x=list(range(1, len(norms) + 1)), y=_positive_or_none(norms), mode="lines+markers",
                                    name=t(f"grad.net_{variant}"), line={"color": COLOURS[variant]},
                                    customdata=result.main_path, hovertemplate="%{customdata}<br>%{y:.3e}"))
    figure.update_layout(title=t("grad.layers_title", step=step), height=420, margin={"t": 50, "b": 40},
                         legend=SIDE_LEGEND)
    figure.update_xaxes(title=t("grad.axis_layer"))
    figure.update_yaxes(title=t("grad.axis_grad_norm"), type="log", exponentformat="power")
    st.plotly_chart(figure, key="grad_layers_chart")
    for variant, count in zero_counts.items():
        if count:
            st.caption(t("grad.zero_not_drawn", net=t(f"grad.net_{variant}"), count=count))


def _ratio_metrics(results: dict[str, list[ProbeResult]], shown: list[str], step: int) -> None:
    columns = st.columns(2 * len(shown))
    for index, variant in enumerate(shown):
        result = results[variant][min(step, len(results[variant]) - 1)]
        ratio = result.first_last_ratio
        name = t(f"grad.net_{variant}")
        if result.diverged:
            value = t("grad.diverged_short")
        elif ratio is None:
            value = t("grad.undefined")
        else:
            value = f"{ratio:.3g}"
        columns[2 * index].metric(t("grad.metric_ratio", net=name), value, help=t("grad.metric_ratio_help"))
        loss = t("grad.diverged_short") if result.diverged else f"{result.loss:.4g}"
        columns[2 * index + 1].metric(t("grad.metric_loss", net=name), loss)


def _signal_chart(results: dict[str, list[ProbeResult]], shown: list[str], step: int) -> None:
    figure = go.Figure()
    for variant in shown:
        result = results[variant][min(step, len(results[variant]) - 1)]
        if result.diverged:
            continue
        names = [t("grad.stem") if name == STEM else name for name in result.block_output_std]
        figure.add_trace(go.Scatter(x=names, y=_positive_or_none(list(result.block_output_std.values())),
                                    mode="lines+markers", name=t(f"grad.net_{variant}"),
                                    line={"color": COLOURS[variant]}))
    figure.update_layout(title=t("grad.signal_title", step=step), height=380, margin={"t": 50, "b": 40},
                         legend=SIDE_LEGEND)
    figure.update_xaxes(title=t("grad.axis_block"))
    figure.update_yaxes(title=t("grad.axis_std"), type="log", exponentformat="power")
    st.plotly_chart(figure, key="grad_signal_chart")


def _log_norm_range(results: dict[str, list[ProbeResult]], shown: list[str]) -> tuple[float | None, float | None]:
    """Return one colour range for every heatmap, so the two networks compare at a glance."""
    logs = [math.log10(result.param_grad_norm[name]) for variant in shown for result in results[variant]
            if not result.diverged for name in result.main_path if result.param_grad_norm[name] > 0]
    return (min(logs), max(logs)) if logs else (None, None)


def _heatmaps(results: dict[str, list[ProbeResult]], shown: list[str]) -> None:
    zmin, zmax = _log_norm_range(results, shown)
    columns = st.columns(len(shown))
    for column, variant in zip(columns, shown):
        finite = [result for result in results[variant] if not result.diverged]
        if not finite:
            column.warning(t("grad.heatmap_empty", net=t(f"grad.net_{variant}")))
            continue
        layers = finite[0].main_path
        z = [[math.log10(result.param_grad_norm[name]) if result.param_grad_norm[name] > 0 else None
              for result in finite] for name in layers]  # (layers, steps)
        zeros = sum(value is None for row in z for value in row)
        if zeros == len(layers) * len(finite):
            column.info(t("grad.heatmap_all_zero", net=t(f"grad.net_{variant}")))
            continue
        figure = go.Figure(go.Heatmap(z=z, x=[result.step for result in finite], y=list(range(1, len(layers) + 1)),
                                      customdata=[[name] * len(finite) for name in layers],
                                      hovertemplate="%{customdata}<br>%{x}: 10^%{z:.2f}",
                                      zmin=zmin, zmax=zmax, colorscale="Viridis",
                                      colorbar={"title": {"text": t("grad.colorbar")}}))
        figure.update_layout(title=t("grad.heatmap_title", net=t(f"grad.net_{variant}")), height=420,
                             margin={"t": 50, "b": 40})
        figure.update_xaxes(title=t("grad.axis_step"), dtick=1)
        figure.update_yaxes(title=t("grad.axis_layer"))
        column.plotly_chart(figure, key=f"grad_heatmap_{variant}")
        if zeros:
            column.caption(t("grad.heatmap_zeros", count=zeros))


def _groups_chart(results: dict[str, list[ProbeResult]], shown: list[str], step: int) -> None:
    figure = go.Figure()
    for variant in shown:
        result = results[variant][min(step, len(results[variant]) - 1)]
        if result.diverged:
            continue
        figure.add_trace(go.Bar(x=list(result.group_grad_norm), y=_positive_or_none(list(result.group_grad_norm.values())),
                                name=t(f"grad.net_{variant}"), marker={"color": COLOURS[variant]}))
    figure.update_layout(title=t("grad.groups_title", step=step), barmode="group", height=340,
                         margin={"t": 50, "b": 40}, legend=SIDE_LEGEND)
    figure.update_xaxes(title=t("grad.axis_group"))
    figure.update_yaxes(title=t("grad.axis_grad_norm"), type="log", exponentformat="power")
    st.plotly_chart(figure, key="grad_groups_chart")


def _parameter_table(results: dict[str, list[ProbeResult]], shown: list[str], step: int) -> None:
    with st.expander(t("grad.table_title")):
        frames = []
        for variant in shown:
            result = results[variant][min(step, len(results[variant]) - 1)]
            frames.append(pd.DataFrame({
                t("grad.col_network"): t(f"grad.net_{variant}"),
                t("grad.col_parameter"): list(result.param_grad_norm),
                t("grad.col_grad_norm"): list(result.param_grad_norm.values()),
            }))
        st.dataframe(pd.concat(frames), hide_index=True,
                     column_config={t("grad.col_grad_norm"): st.column_config.NumberColumn(format="%.3e")})


# --- sections ----------------------------------------------------------------------------------

def _divergence_banners(results: dict[str, list[ProbeResult]], settings: ProbeSettings) -> None:
    for variant, steps in results.items():
        last = steps[-1]
        if last.diverged:
            st.error(_say(Finding("grad.diverged_banner", {"net": variant, "step": last.step, "lr": settings.lr,
                                                          **last.divergence})))


def probe_section() -> None:
    st.markdown(t("grad.probe_intro"))
    family, block = _family_widgets()
    _probe_form(family, block)
    arch, settings = _request()
    line = st.empty()
    try:
        with st.spinner(t("grad.computing")):
            results = _cached_compare(*_keys(arch, settings), str(pick_device()))
    except LabError as error:
        show_error(t, error)
        return
    _model_line(arch, settings, line)

    shown = st.pills(t("grad.networks"), VARIANTS, selection_mode="multi", default=list(VARIANTS),
                     key="grad_shown", persist_state="session",
                     format_func=lambda value: t(f"grad.net_{value}")) or list(VARIANTS)
    _divergence_banners(results, settings)
    longest = max(len(steps) for steps in results.values())
    step = 0
    if longest > 1:
        step = st.select_slider(t("grad.step_select"), list(range(longest)), value=0, key="grad_step")

    _layer_chart(results, shown, step)
    _ratio_metrics(results, shown, step)
    _explain(layer_findings(arch, results, step), "grad.explain_layers")

    _signal_chart(results, shown, step)
    _explain(signal_findings(arch, results, step), "grad.explain_signal")

    if settings.steps > 0:
        _heatmaps(results, shown)
        _explain(step_findings(results, settings), "grad.explain_heatmap")

    _groups_chart(results, shown, step)
    st.caption(t("grad.explain_groups"))
    _parameter_table(results, shown, step)


def shattered_section() -> None:
    st.markdown(t("grad.shattered_intro"))
    arch, settings = _request()
    line = st.empty()
    points = st.select_slider(t("grad.points"), SHATTERED_POINTS, value=64, key="grad_points", persist_state="session")
    try:
        with st.spinner(t("grad.computing")):
            results = _cached_shattered(*_keys(arch, settings), points)
    except LabError as error:
        show_error(t, error)
        return
    _model_line(arch, settings, line)

    derivative = go.Figure()
    correlation = go.Figure()
    for variant in VARIANTS:
        result = results[variant]
        values = result.directional_derivative
        scale = max((abs(value) for value in values if math.isfinite(value)), default=0.0) or 1.0
        derivative.add_trace(go.Scatter(x=result.t, y=[value / scale for value in values], mode="lines",
                                        name=t(f"grad.net_{variant}"), line={"color": COLOURS[variant]}))
        correlation.add_trace(go.Scatter(x=result.lags, y=[None if math.isnan(c) else c for c in result.correlation],
                                         mode="lines+markers", name=t(f"grad.net_{variant}"),
                                         line={"color": COLOURS[variant]}))
    derivative.update_layout(title=t("grad.shattered_deriv_title"), height=360, margin={"t": 50, "b": 40},
                             legend=SIDE_LEGEND)
    derivative.update_xaxes(title=t("grad.axis_t"))
    derivative.update_yaxes(title=t("grad.axis_deriv"))
    correlation.update_layout(title=t("grad.shattered_corr_title"), height=360, margin={"t": 50, "b": 40},
                              legend=SIDE_LEGEND)
    correlation.update_xaxes(title=t("grad.axis_lag"))
    correlation.update_yaxes(title=t("grad.axis_corr"), range=[-0.2, 1.05])

    columns = st.columns(2)
    columns[0].plotly_chart(derivative, key="grad_shattered_derivative")
    columns[1].plotly_chart(correlation, key="grad_shattered_correlation")

    lines = []
    for variant in VARIANTS:
        value = results[variant].neighbour_correlation
        if math.isnan(value):
            lines.append(_say(Finding("grad.find_shattered_undefined", {"net": variant})))
        else:
            lines.append(_say(Finding("grad.find_shattered", {"net": variant, "corr": value})))
    st.caption(t("grad.explain_shattered"))
    st.markdown("\n".join(f"- {line}" for line in lines))


# --- degradation -----------------------------------------------------------------------------------

def _start_run(preset: str) -> None:
    config = degradation.preset_config(preset)
    run_id = jobs.submit("degradation", config.to_dict(), name=t(f"grad.preset_{preset}"))
    jobs.ensure_worker()
    show_run_id(RUN_PARAM, LAST_RUN, run_id)


def _run_picker() -> None:
    runs = jobs.list_runs(kind="degradation")
    if not runs:
        return
    current = st.query_params.get(RUN_PARAM) or st.session_state.get(LAST_RUN)  # the URL loses it on a page switch
    ids = [run.id for run in runs]
    index = ids.index(current) if current in ids else None
    labels = {run.id: t("grad.deg_run_label", name=run.name, run_id=run.id, status=t(f"grad.status_{run.status}"))
              for run in runs}
    chosen = st.selectbox(t("grad.deg_previous"), ids, index=index, key="grad_deg_pick",
                          format_func=lambda run_id: labels[run_id], placeholder=t("grad.deg_pick_placeholder"))
    if chosen and chosen != current:
        show_run_id(RUN_PARAM, LAST_RUN, chosen)
        st.rerun()


def _run_plan(run_id: str) -> dict:
    path = jobs.run_dir(run_id) / degradation.RESULT_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _loss_chart(run_id: str, plan: dict) -> None:
    frame = jobs.metrics(run_id)
    offsets = {entry["series"]: entry["step_offset"] for entry in plan.get("plan", [])}
    figure = go.Figure()
    for series, offset in offsets.items():
        rows = frame[frame["series"] == series] if not frame.empty else frame
        if rows.empty or "loss" not in rows:
            continue
        rows = rows.sort_values("step")
        variant, depth = series.split("-")
        smoothed = rows["loss"].rolling(SMOOTHING_STEPS, min_periods=1).mean()
        figure.add_trace(go.Scatter(x=rows["step"] - offset, y=smoothed, mode="lines", showlegend=True,
                                    name=t(f"grad.series_{variant}", depth=depth),
                                    line={"color": COLOURS[variant],
                                          "dash": "solid" if int(depth) == max(plan["config"]["depths"]) else "dot"}))
    figure.add_hline(y=math.log(10), line={"dash": "dash", "color": "#888888"},
                     annotation_text=t("grad.chance_level"))
    figure.update_layout(title=t("grad.deg_chart_title"), height=420, margin={"t": 50, "b": 40},
                         legend=SIDE_LEGEND)
    steps_per_network = sorted(offsets.values())[1] if len(offsets) > 1 else None
    figure.update_xaxes(title=t("grad.axis_train_step"), range=[0, steps_per_network] if steps_per_network else None)
    figure.update_yaxes(title=t("grad.axis_train_loss"))
    st.plotly_chart(figure, key="grad_deg_chart")
    st.caption(t("grad.deg_smoothing", window=SMOOTHING_STEPS))


def _run_status(run) -> None:
    status = t(f"grad.status_{run.status}")
    if run.status == jobs.QUEUED:
        st.info(t("grad.deg_queued", position=run.queue_position or 1))
    elif run.status == jobs.RUNNING:
        eta = run.eta_s
        st.progress(run.progress, text=t("grad.deg_progress", done=run.progress_done, total=run.progress_total,
                                         eta=t("grad.deg_eta", seconds=round(eta)) if eta is not None else ""))
    elif run.status == jobs.FAILED and run.message_key:
        st.error(t(run.message_key, **run.message_params))
    else:
        st.caption(t("grad.deg_status", status=status))


def _results_table(plan: dict) -> None:
    networks = plan.get("networks", {})
    finished = [entry for entry in networks.values() if "train_loss" in entry]
    if not finished:
        return
    table = pd.DataFrame({
        t("grad.col_network"): [t(f"grad.series_{entry['variant']}", depth=entry["depth"]) for entry in finished],
        t("grad.col_train_loss"): [entry["train_loss"] for entry in finished],
        t("grad.col_last_epoch_loss"): [entry["last_epoch_loss"] for entry in finished],
        t("grad.col_train_acc"): [entry["train_acc"] for entry in finished],
        t("grad.col_val_acc"): [entry["val_acc"] for entry in finished],
    })
    st.dataframe(table, hide_index=True)

    depths = tuple(plan["config"]["depths"])
    loss = {entry["series"]: entry["train_loss"] for entry in finished}
    shallow, deep = depths
    params = {"shallow": shallow, "deep": deep,
              "plain_shallow": loss.get(f"plain-{shallow}", math.nan), "plain_deep": loss.get(f"plain-{deep}", math.nan),
              "residual_shallow": loss.get(f"residual-{shallow}", math.nan),
              "residual_deep": loss.get(f"residual-{deep}", math.nan)}
    params["plain_gap"] = params["plain_deep"] - params["plain_shallow"]
    params["residual_gap"] = params["residual_deep"] - params["residual_shallow"]
    facts = degradation.degradation_facts(networks, depths)
    for fact, outcome in facts.items():
        st.markdown("- " + t(f"grad.deg_fact_{fact}_{outcome}", **params))
    if len(facts) == 3:
        st.caption(t("grad.deg_note"))


def _render_run(run_id: str) -> jobs.Run | None:
    """Draw a run's state and return the run as drawn, or None when it is not found."""
    run = jobs.get(run_id)
    if run is None:
        st.warning(t("grad.deg_missing", run_id=run_id))
        return None
    _run_status(run)
    plan = _run_plan(run_id)
    if plan:
        _loss_chart(run_id, plan)
        _results_table(plan)
    if run.is_active and st.button(t("grad.deg_cancel"), key="grad_deg_cancel"):
        jobs.cancel(run_id)
    return run


@st.fragment(run_every=1)
def _live_run(run_id: str, drawn_status: str) -> None:
    run = _render_run(run_id)
    if run is None or not run.is_active:
        st.rerun()  # the run ended: draw the final state once, without polling
    if run.status != drawn_status:
        st.rerun()  # queued -> running: redraw the run picker, whose labels show the status


def degradation_section() -> None:
    st.markdown(t("grad.deg_intro"))
    preset = st.radio(t("grad.preset"), degradation.PRESETS, key="grad_preset", persist_state="session",
                      horizontal=True, format_func=lambda value: t(f"grad.preset_{value}"))
    config = degradation.preset_config(preset)
    st.caption(t("grad.preset_desc", shallow=config.depths[0], deep=config.depths[1], epochs=config.epochs,
                 size=config.input_size, batch=config.batch_size, lr=config.lr_max))
    if st.button(t("grad.deg_start"), type="primary", key="grad_deg_start"):
        try:
            _start_run(preset)
        except LabError as error:
            show_error(t, error)
    _run_picker()

    run_id = remembered_run_id(RUN_PARAM, LAST_RUN)
    if run_id is None:
        st.caption(t("grad.deg_none"))
        return
    run = jobs.get(run_id)
    if run is not None and run.is_active:
        _live_run(run_id, run.status)
    else:
        _render_run(run_id)


# --- page --------------------------------------------------------------------------------------------

st.title(t("grad.title"))
st.markdown(t("grad.intro"))
requested_section = st.query_params.get(SECTION_PARAM)
if requested_section in SECTIONS:
    st.session_state["grad_section"] = requested_section
    del st.query_params[SECTION_PARAM]  # once opened, the section control decides
if "grad_section" not in st.session_state:
    has_run = st.query_params.get(RUN_PARAM) or st.session_state.get(LAST_RUN)
    st.session_state["grad_section"] = "degradation" if has_run else "probe"
section = st.segmented_control(t("grad.section"), SECTIONS, key="grad_section", persist_state="session",
                               format_func=lambda value: t(f"grad.section_{value}")) or "probe"

if section == "probe":
    probe_section()
elif section == "shattered":
    shattered_section()
else:
    degradation_section()
