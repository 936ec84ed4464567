"""Arquitectura: build any network of the lab, then read its diagram, layers, totals and a comparison."""

import plotly.graph_objects as go
import streamlit as st

from core.architecture import (
    CIFAR_PRESET_DEPTHS,
    FAMILIES,
    IMAGENET_DEPTHS,
    LAYER_COLUMNS,
    MAX_CIFAR_N,
    STAGE_COLUMNS,
    ArchChoice,
    canonical_block,
    choice_from_config,
    default_choice,
    diagram_dot,
    format_count,
    format_macs,
    format_shape,
    format_stage_blocks,
    layer_table,
    stage_table,
)
from core.models import BLOCK_TYPES, SHORTCUTS, STEMS, ResNetConfig, cifar_config, imagenet_config
from core.summary import ModelSummary
from ui import state
from ui.arch_cache import cached_summary
from ui.common import page_setup, show_error

BLOCK_NAMES = {"basic": "BasicBlock", "bottleneck": "Bottleneck"}
CUSTOM_N = 0  # the CIFAR depth selector's "other n" entry
WRITTEN_CONFIG = "arch_written_config"  # the config this page last shared, to notice changes made elsewhere
VIEWS = ("diagram", "table", "charts", "compare")
COMPARISONS = ("plain_twin", "other_shortcut", "r18", "r34", "r50", "r101", "r152", "c20", "c56", "c110")
# Widget limits are wide on purpose: core.models.validate explains what is allowed.
WIDGET_MAX = 100_000

t = page_setup("arch.title")


# --- The form: session state <-> ArchChoice ---------------------------------------------------

def _widget_values(choice: ArchChoice) -> dict[str, object]:
    cifar_depth = 6 * choice.cifar_n + 2
    return {
        "arch_family": choice.family,
        "arch_imagenet_depth": choice.imagenet_depth,
        "arch_cifar_preset": cifar_depth if cifar_depth in CIFAR_PRESET_DEPTHS else CUSTOM_N,
        "arch_cifar_n": choice.cifar_n,
        "arch_block": choice.block,
        "arch_custom_on": choice.custom_stages is not None,
        "arch_custom_text": format_stage_blocks(choice.stage_blocks()),
        "arch_skip": choice.skip,
        "arch_shortcut": choice.shortcut,
        "arch_stem": choice.stem,
        "arch_base_width": choice.base_width,
        "arch_num_classes": choice.num_classes,
        "arch_input_size": choice.input_size,
    }


def _seed_widgets() -> None:
    """Fill the form from the shared config on a first visit, or when another page changed it."""
    shared = state.get_arch_config().to_dict()
    if "arch_family" in st.session_state and st.session_state.get(WRITTEN_CONFIG) == shared:
        return
    st.session_state.update(_widget_values(choice_from_config(ResNetConfig.from_dict(shared))))


def _on_family_change() -> None:
    """Reset the form to the new family's defaults (stem, shortcut, width, classes, input size)."""
    family = st.session_state["arch_family"]
    defaults = _widget_values(default_choice(family))
    st.session_state.update({key: value for key, value in defaults.items() if key != "arch_family"})


def _on_depth_change() -> None:
    """Restore the block type He et al. 2016 (Table 1) pair with the new depth."""
    family = st.session_state["arch_family"]
    st.session_state["arch_block"] = canonical_block(family, st.session_state["arch_imagenet_depth"])


def _on_custom_toggle() -> None:
    """Prefill hand-set stage counts with those of the network built last."""
    if st.session_state["arch_custom_on"]:
        st.session_state["arch_custom_text"] = format_stage_blocks(state.get_arch_config().stage_blocks)


def _depth_inputs(family: str) -> dict[str, int]:
    if family == "imagenet":
        depth = st.selectbox(t("arch.depth"), IMAGENET_DEPTHS, key="arch_imagenet_depth",
                             format_func=lambda d: f"ResNet-{d}", on_change=_on_depth_change)
        return {"imagenet_depth": depth}

    preset = st.selectbox(t("arch.cifar_depth"), (*CIFAR_PRESET_DEPTHS, CUSTOM_N), key="arch_cifar_preset",
                          format_func=lambda d: t("arch.cifar_preset", depth=d, n=(d - 2) // 6) if d
                          else t("arch.cifar_custom"))
    if preset == CUSTOM_N:
        n = st.number_input(t("arch.cifar_n"), min_value=1, max_value=MAX_CIFAR_N, step=1, key="arch_cifar_n")
    else:
        n = (preset - 2) // 6
    return {"cifar_n": int(n)}


def architecture_form() -> ArchChoice:
    """Sidebar widgets for the network; returns the choice as plain values."""
    _seed_widgets()
    st.sidebar.header(t("arch.form_header"))
    with st.sidebar:
        family = st.radio(t("arch.family"), FAMILIES, key="arch_family", horizontal=True,
                          format_func=lambda f: t(f"arch.family_{f}"), on_change=_on_family_change)
        depth = _depth_inputs(family)
        block = st.selectbox(t("arch.block"), BLOCK_TYPES, key="arch_block", format_func=BLOCK_NAMES.get,
                             help=t("arch.block_help"))
        custom = st.toggle(t("arch.custom_stages"), key="arch_custom_on", on_change=_on_custom_toggle)
        stages_text = st.text_input(t("arch.stage_counts"), key="arch_custom_text",
                                    help=t("arch.stage_counts_help")) if custom else None
        skip = st.toggle(t("arch.skip"), key="arch_skip", help=t("arch.skip_help"))
        shortcut = st.radio(t("arch.shortcut"), SHORTCUTS, key="arch_shortcut",
                            format_func=lambda s: t(f"arch.shortcut_{s}"), help=t("arch.shortcut_help"))
        stem = st.radio(t("arch.stem"), STEMS, key="arch_stem", format_func=lambda s: t(f"arch.stem_{s}"))
        base_width = st.number_input(t("arch.base_width"), min_value=1, max_value=WIDGET_MAX, step=8,
                                     key="arch_base_width", help=t("arch.base_width_help"))
        num_classes = st.number_input(t("arch.num_classes"), min_value=1, max_value=10 * WIDGET_MAX, step=1,
                                      key="arch_num_classes")
        input_size = st.number_input(t("arch.input_size"), min_value=1, max_value=WIDGET_MAX, step=8,
                                     key="arch_input_size", help=t("arch.input_size_help"))
    return ArchChoice(family=family, block=block, custom_stages=stages_text, skip=skip, shortcut=shortcut,
                      stem=stem, base_width=int(base_width), num_classes=int(num_classes),
                      input_size=int(input_size), **depth)


# --- Views -----------------------------------------------------------------------------------

def _block_name(kind: str) -> str:
    return BLOCK_NAMES.get(kind, kind)


def _display_name(summary: ModelSummary) -> str:
    return summary.canonical_name or t("arch.custom_name", layers=summary.weighted_layers)


def show_identity(choice: ArchChoice, summary: ModelSummary) -> None:
    """Say what was built: its real weighted depth and its canonical name, if it has one."""
    layers = summary.weighted_layers
    st.subheader(_display_name(summary))
    stages = format_stage_blocks(tuple(summary.config["stage_blocks"]))
    st.markdown(t("arch.built_as", layers=layers, stages=stages, block=_block_name(choice.block)))

    if choice.family == "imagenet" and choice.custom_stages is None:
        requested = f"ResNet-{choice.imagenet_depth}"
        if summary.canonical_name != requested:
            actual = summary.canonical_name or t("arch.no_canonical")
            st.info(t("arch.pairing_note", requested=requested, stages=stages, block=_block_name(choice.block),
                      layers=layers, name=actual))
    if choice.family == "cifar" and choice.custom_stages is None:
        formula = "9n+2" if choice.block == "bottleneck" else "6n+2"
        st.caption(t("arch.cifar_formula", n=choice.cifar_n, formula=formula, layers=layers))
    if not choice.skip:
        st.caption(t("arch.plain_note"))
    elif choice.shortcut == "zero_pad":
        st.caption(t("arch.zero_pad_note"))
    else:
        st.caption(t("arch.projection_note"))


def show_totals(summary: ModelSummary) -> None:
    columns = st.columns(4)
    columns[0].metric(t("arch.total_params"), format_count(summary.total_params))
    columns[1].metric(t("arch.trainable_params"), format_count(summary.trainable_params))
    columns[2].metric(t("arch.total_macs"), format_macs(summary.total_macs), help=t("arch.macs_help"))
    columns[3].metric(t("arch.weighted_layers"), str(summary.weighted_layers), help=t("arch.weighted_help"))
    st.caption(t("arch.shapes_caption", input=format_shape(summary.input_shape),
                 output=format_shape(summary.output_shape), seconds=f"{summary.seconds:.2f}"))


def _keep_valid(key: str, options: list[str], default: list[str]) -> None:
    """Drop stored multiselect values that are no longer among its options (Streamlit raises on them)."""
    current = st.session_state.get(key, default)
    st.session_state[key] = [value for value in current if value in options]


def show_diagram(summary: ModelSummary) -> None:
    stages = [group.name for group in summary.groups if group.name.startswith("layer")]
    _keep_valid("arch_expanded_stages", stages, stages[:2])
    expanded_stages = st.multiselect(t("arch.expand_stages"), stages, key="arch_expanded_stages")

    blocks = [block.name for block in summary.blocks if block.group in expanded_stages]
    default_blocks = [name for name in blocks if name.endswith(".0")][1:2]
    _keep_valid("arch_expanded_blocks", blocks, default_blocks)
    expanded_blocks = st.multiselect(t("arch.expand_blocks"), blocks, key="arch_expanded_blocks")

    st.graphviz_chart(diagram_dot(summary, set(expanded_stages), set(expanded_blocks), t))
    st.caption(t("arch.diagram_legend"))


def _translated_columns(frame, columns: tuple[str, ...]):
    return frame.rename(columns={column: t(f"arch.col_{column}") for column in columns})


def _count_columns() -> dict:
    """Parameters and MACs with thousands separators, as in the totals."""
    return {t(f"arch.col_{column}"): st.column_config.NumberColumn(format="localized")
            for column in ("params", "macs")}


def show_table(summary: ModelSummary) -> None:
    groups = [group.name for group in summary.groups]
    left, right = st.columns(2)
    only_weighted = left.toggle(t("arch.only_weighted"), key="arch_only_weighted")
    group = right.selectbox(t("arch.filter_group"), [None, *groups], key="arch_filter_group",
                            format_func=lambda g: t("arch.all_groups") if g is None else g)
    table = layer_table(summary, only_weighted=only_weighted, group=group)
    st.dataframe(_translated_columns(table, LAYER_COLUMNS), hide_index=True, width="stretch",
                 column_config=_count_columns())
    st.caption(t("arch.table_caption", rows=len(table)))

    st.subheader(t("arch.stage_header"))
    st.dataframe(_translated_columns(stage_table(summary), STAGE_COLUMNS), hide_index=True, width="stretch",
                 column_config=_count_columns())


def _stage_bars(summaries: list[tuple[str, ModelSummary]], value: str, title_key: str) -> go.Figure:
    figure = go.Figure()
    for name, summary in summaries:
        figure.add_trace(go.Bar(x=[group.name for group in summary.groups],
                                y=[getattr(group, value) for group in summary.groups], name=name))
    figure.update_layout(title=t(title_key), barmode="group", height=360, margin=dict(t=50, b=40),
                         xaxis_title=t("arch.axis_group"), yaxis_title=t(f"arch.axis_{value}"))
    figure.update_yaxes(exponentformat="SI")  # 500M and 1G, as the page's metrics write MACs
    return figure


def show_charts(summary: ModelSummary, name: str) -> None:
    left, right = st.columns(2)
    left.plotly_chart(_stage_bars([(name, summary)], "params", "arch.chart_params"), width="stretch")
    right.plotly_chart(_stage_bars([(name, summary)], "macs", "arch.chart_macs"), width="stretch")
    st.caption(t("arch.charts_caption"))


def _comparison_config(option: str, config: ResNetConfig) -> ResNetConfig:
    if option == "plain_twin":
        return config.replace(skip=not config.skip)
    if option == "other_shortcut":
        return config.replace(shortcut="zero_pad" if config.shortcut == "projection" else "projection")
    if option.startswith("r"):
        return imagenet_config(int(option[1:]))
    return cifar_config(int(option[1:]))


def _comparison_label(option: str) -> str:
    if option.startswith("r"):
        return f"ResNet-{option[1:]}"
    if option.startswith("c"):
        return t("arch.compare_cifar", depth=option[1:])
    return t(f"arch.compare_{option}")


def _summary_column(column, title: str, summary: ModelSummary) -> None:
    column.subheader(title)
    column.metric(t("arch.total_params"), format_count(summary.total_params))
    column.metric(t("arch.total_macs"), format_macs(summary.total_macs))
    column.metric(t("arch.weighted_layers"), str(summary.weighted_layers))
    shortcuts = sorted({block.shortcut for block in summary.blocks})
    column.caption(t("arch.compare_shortcuts", kinds=", ".join(t(f"arch.kind_{kind}") for kind in shortcuts)))


def show_compare(config: ResNetConfig, summary: ModelSummary) -> None:
    option = st.selectbox(t("arch.compare_with"), COMPARISONS, key="arch_compare",
                          format_func=_comparison_label)
    try:
        other = cached_summary(_comparison_config(option, config).to_dict())
    except Exception as error:  # noqa: BLE001 - shown as a translated message, never a traceback
        show_error(t, error)
        return

    name = _display_name(summary)
    other_name = _display_name(other)
    if other_name == name:  # e.g. the other shortcut type: same name, different network
        other_name = f"{other_name} ({_comparison_label(option)})"
    left, right = st.columns(2)
    _summary_column(left, t("arch.compare_a", name=name), summary)
    _summary_column(right, t("arch.compare_b", name=other_name), other)
    delta = other.total_params - summary.total_params
    st.caption(t("arch.compare_delta", delta=f"{delta:+,}", ratio=f"{other.total_macs / summary.total_macs:.2f}"))

    pair = [(t("arch.compare_a", name=name), summary), (t("arch.compare_b", name=other_name), other)]
    charts = st.columns(2)
    charts[0].plotly_chart(_stage_bars(pair, "params", "arch.chart_params"), width="stretch")
    charts[1].plotly_chart(_stage_bars(pair, "macs", "arch.chart_macs"), width="stretch")


# --- Page ------------------------------------------------------------------------------------

st.title(t("arch.title"))
st.markdown(t("arch.intro"))

choice = architecture_form()
try:
    config = choice.to_config(base=state.get_arch_config())
    with st.spinner(t("arch.building")):
        summary = cached_summary(config.to_dict())
except Exception as error:  # noqa: BLE001 - shown as a translated message, never a traceback
    show_error(t, error)
    st.stop()

shared_changed = state.get_arch_config() != config
state.set_arch_config(config)
st.session_state[WRITTEN_CONFIG] = config.to_dict()
if shared_changed:
    st.rerun()  # the sidebar's model badge was drawn before this run chose the model

show_identity(choice, summary)
show_totals(summary)

view = st.radio(t("arch.view"), VIEWS, key="arch_view", horizontal=True, format_func=lambda v: t(f"arch.view_{v}"))
if view == "diagram":
    show_diagram(summary)
elif view == "table":
    show_table(summary)
elif view == "charts":
    show_charts(summary, _display_name(summary))
else:
    show_compare(config, summary)
