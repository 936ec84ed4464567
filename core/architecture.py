"""The Arquitectura page's logic without Streamlit: its choices, its diagram, its tables.

`ArchChoice` is the page's form as plain values and converts both ways to a `ResNetConfig`, so the
page can rebuild its widgets from the shared config another page left behind. `diagram_dot`
draws a summary as Graphviz DOT; it takes the page's translator so every word is from the catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from core.errors import LabError
from core.models import IMAGENET_BLOCK, IMAGENET_STAGES, ResNetConfig, cifar_config, imagenet_config
from core.summary import (
    SHORTCUT_IDENTITY,
    SHORTCUT_NONE,
    SHORTCUT_PROJECTION,
    SHORTCUT_ZERO_PAD,
    BlockSummary,
    LayerRow,
    ModelSummary,
)

FAMILIES = ("imagenet", "cifar")
IMAGENET_DEPTHS = tuple(IMAGENET_STAGES)
CIFAR_PRESET_DEPTHS = (20, 32, 44, 56, 110, 1202)  # 6n+2 with BasicBlock; 1202 is the paper's n = 200
MAX_CIFAR_N = 333  # 999 blocks, just under core.summary.MAX_SUMMARY_BLOCKS

# A stage drawn with more blocks than this shows the first few, an ellipsis, and the last one.
MAX_DRAWN_BLOCKS = 8
DRAWN_HEAD_BLOCKS = 6

Translate = Callable[..., str]


@dataclass(frozen=True)
class ArchChoice:
    """The Arquitectura form as plain values; `to_config` turns it into a buildable config."""

    family: str = "imagenet"  # which stage layout the depth refers to: "imagenet" or "cifar"
    imagenet_depth: int = 18  # 18, 34, 50, 101 or 152: picks the stage counts of Table 1
    cifar_n: int = 3  # blocks per stage of the CIFAR layout (3 stages): depth 6n+2 with BasicBlock
    block: str = "basic"
    custom_stages: str | None = None  # "3, 4, 6, 3" replaces the family's stage counts; None keeps them
    skip: bool = True
    shortcut: str = "projection"
    stem: str = "imagenet"
    base_width: int = 64
    num_classes: int = 1000
    input_size: int = 224

    def stage_blocks(self) -> tuple[int, ...]:
        if self.custom_stages is not None:
            return parse_stage_blocks(self.custom_stages)
        if self.family == "cifar":
            return (self.cifar_n,) * 3
        if self.imagenet_depth not in IMAGENET_STAGES:
            allowed = format_stage_blocks(IMAGENET_DEPTHS)
            raise LabError("errors.imagenet_depth", depth=self.imagenet_depth, allowed=allowed)
        return IMAGENET_STAGES[self.imagenet_depth]

    def to_config(self, base: ResNetConfig | None = None) -> ResNetConfig:
        """Return the config; fields the page does not set (BN, init, channels) come from `base`."""
        base = base or ResNetConfig()
        return base.replace(
            stage_blocks=self.stage_blocks(),
            block=self.block,
            stem=self.stem,
            base_width=self.base_width,
            num_classes=self.num_classes,
            input_size=self.input_size,
            skip=self.skip,
            shortcut=self.shortcut,
        )


def default_choice(family: str) -> ArchChoice:
    """Return the form's defaults for a family: ResNet-18 on ImageNet, ResNet-20 on CIFAR-10."""
    if family == "cifar":
        return choice_from_config(cifar_config(20))
    return choice_from_config(imagenet_config(18))


def canonical_block(family: str, imagenet_depth: int) -> str:
    """Return the block He et al. 2016 (Table 1) pair with a depth: BasicBlock up to 34 and on CIFAR."""
    if family == "cifar":
        return "basic"
    return IMAGENET_BLOCK.get(imagenet_depth, "basic")


def choice_from_config(config: ResNetConfig) -> ArchChoice:
    """Return the form values that rebuild `config` (except the fields the page does not show)."""
    stages = tuple(config.stage_blocks)
    common = dict(
        block=config.block,
        skip=config.skip,
        shortcut=config.shortcut,
        stem=config.stem,
        base_width=config.base_width,
        num_classes=config.num_classes,
        input_size=config.input_size,
    )
    if len(stages) == 3 and len(set(stages)) == 1 and stages[0] <= MAX_CIFAR_N:
        return ArchChoice(family="cifar", cifar_n=stages[0], **common)

    matching = [depth for depth, counts in IMAGENET_STAGES.items() if counts == stages]
    if matching:
        # ResNet-34 and ResNet-50 share stage counts; prefer the depth whose pairing is this block.
        preferred = [depth for depth in matching if IMAGENET_BLOCK[depth] == config.block]
        return ArchChoice(family="imagenet", imagenet_depth=(preferred or matching)[0], **common)

    family = "cifar" if config.stem == "cifar" else "imagenet"
    return ArchChoice(family=family, custom_stages=format_stage_blocks(stages), **common)


def parse_stage_blocks(text: str) -> tuple[int, ...]:
    """Read "3, 4, 6, 3" (commas, spaces or semicolons) as stage counts; LabError if it is not that."""
    parts = [part for part in text.replace(";", ",").replace(" ", ",").split(",") if part]
    try:
        counts = tuple(int(part) for part in parts)
    except ValueError:
        raise LabError("arch.err_stage_text", value=text.strip()) from None
    if not counts:
        raise LabError("arch.err_stage_text", value=text.strip())
    return counts


def format_stage_blocks(stages: tuple[int, ...]) -> str:
    return ", ".join(str(count) for count in stages)


def format_count(number: int) -> str:
    """Thousands separated by commas, as the course and torchvision print counts: 11,689,512."""
    return f"{number:,}"


def format_macs(macs: int) -> str:
    """Multiply-accumulates with an SI prefix: "1.81 G", "40.6 M", "640"."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if macs >= scale:
            return f"{macs / scale:.3g} {prefix}"
    return str(macs)


def format_shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(size) for size in shape)


# --- Diagram -------------------------------------------------------------------------------

_GRAPH_ATTRIBUTES = (
    'rankdir=TB; nodesep=0.25; ranksep=0.3; bgcolor="transparent";',
    'node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
    'fillcolor="#eef3fb", color="#5b7db1"];',
    'edge [color="#555555", arrowsize=0.6, fontname="Helvetica", fontsize=9];',
)
_SHORTCUT_STYLE = {
    SHORTCUT_IDENTITY: 'color="#2e8b57", style=dashed',
    SHORTCUT_PROJECTION: 'color="#d2691e", penwidth=1.6',
    SHORTCUT_ZERO_PAD: 'color="#7b4fb0", style=dashed, penwidth=1.6',
}
_SHORTCUT_LABEL_KEY = {
    SHORTCUT_IDENTITY: "arch.dot_identity",
    SHORTCUT_PROJECTION: "arch.dot_projection",
    SHORTCUT_ZERO_PAD: "arch.dot_zero_pad",
}


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _node_id(name: str) -> str:
    return "n_" + name.replace(".", "_").replace("#", "_")


class _Dot:
    """Accumulates DOT statements; `node` and `edge` quote every label.

    Edges are written after every cluster: Graphviz makes a node a member of each subgraph that
    mentions it, so an edge written inside a block's cluster would pull its source node in.
    """

    def __init__(self) -> None:
        self.lines: list[str] = ["digraph resnet {", *_GRAPH_ATTRIBUTES]
        self.edges: list[str] = []

    def node(self, node_id: str, label: str, tooltip: str = "", extra: str = "") -> None:
        attributes = [f"label={_quote(label)}", f"tooltip={_quote(tooltip or label)}"]
        if extra:
            attributes.append(extra)
        self.lines.append(f"{node_id} [{', '.join(attributes)}];")

    def edge(self, source: str, target: str, label: str = "", extra: str = "") -> None:
        attributes = [f"label={_quote(label)}"] if label else []
        if extra:
            attributes.append(extra)
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        self.edges.append(f"{source} -> {target}{suffix};")

    def open_cluster(self, cluster_id: str, label: str, fill: str) -> None:
        self.lines.append(f"subgraph cluster_{cluster_id} {{")
        self.lines.append(f'label={_quote(label)}; style="rounded,filled"; fillcolor="{fill}"; '
                          'color="#9aa7b8"; fontname="Helvetica"; fontsize=10;')

    def close_cluster(self) -> None:
        self.lines.append("}")

    def source(self) -> str:
        return "\n".join([*self.lines, *self.edges, "}"])


def _layer_label(row: LayerRow) -> str:
    leaf = row.name.removeprefix(f"{row.block}.") if row.block else row.name  # "downsample.0"
    detail = f" {row.detail}" if row.detail else ""
    return f"{leaf} · {row.kind}{detail}\n{format_shape(row.output_shape)}"


def _numbers_line(params: int, macs: int, t: Translate) -> str:
    return t("arch.dot_numbers", params=format_count(params), macs=format_macs(macs))


def _draw_block_collapsed(dot: _Dot, block: BlockSummary, previous: str, t: Translate) -> str:
    block_id = _node_id(block.name)
    label = (f"{block.name} · {block.kind}\n"
             f"{format_shape(block.input_shape)} → {format_shape(block.output_shape)}\n"
             f"{_numbers_line(block.params, block.macs, t)}")
    dot.node(block_id, label)
    dot.edge(previous, block_id)
    if block.shortcut == SHORTCUT_NONE:
        return block_id

    add_id = block_id + "_add"
    dot.node(add_id, "+", tooltip=t("arch.dot_add_tooltip"),
             extra='shape=circle, width=0.3, fixedsize=true, fillcolor="#d9f2e3", color="#2e8b57"')
    dot.edge(block_id, add_id)
    dot.edge(previous, add_id, label=t(_SHORTCUT_LABEL_KEY[block.shortcut]), extra=_SHORTCUT_STYLE[block.shortcut])
    return add_id


def _draw_block_expanded(dot: _Dot, summary: ModelSummary, block: BlockSummary, previous: str,
                         t: Translate) -> str:
    rows = [(index, row) for index, row in enumerate(summary.rows) if row.block == block.name]
    branch = [(index, row) for index, row in rows if not row.on_shortcut]
    shortcut = [(index, row) for index, row in rows if row.on_shortcut]
    # The block's last ReLU comes after the addition (torchvision's layout), so it is drawn after "+".
    *branch, (final_index, final_relu) = branch

    block_id = _node_id(block.name)
    dot.open_cluster(block_id, f"{block.name} · {block.kind} · {_numbers_line(block.params, block.macs, t)}",
                     "#f7f9fc")
    chain_end = previous
    for index, row in branch:
        row_id = f"{block_id}_r{index}"
        dot.node(row_id, _layer_label(row))
        dot.edge(chain_end, row_id)
        chain_end = row_id

    final_id = f"{block_id}_r{final_index}"
    if block.shortcut == SHORTCUT_NONE:
        dot.node(final_id, _layer_label(final_relu))
        dot.edge(chain_end, final_id)
        dot.close_cluster()
        return final_id

    add_id = block_id + "_add"
    dot.node(add_id, "+", tooltip=t("arch.dot_add_tooltip"),
             extra='shape=circle, width=0.3, fixedsize=true, fillcolor="#d9f2e3", color="#2e8b57"')
    dot.edge(chain_end, add_id)
    shortcut_end = previous
    for index, row in shortcut:
        row_id = f"{block_id}_r{index}"
        dot.node(row_id, _layer_label(row), extra='fillcolor="#fdf0e4", color="#d2691e"')
        dot.edge(shortcut_end, row_id, extra=_SHORTCUT_STYLE[block.shortcut])
        shortcut_end = row_id
    label = "" if shortcut else t(_SHORTCUT_LABEL_KEY[block.shortcut])
    dot.edge(shortcut_end, add_id, label=label, extra=_SHORTCUT_STYLE[block.shortcut])
    dot.node(final_id, _layer_label(final_relu))
    dot.edge(add_id, final_id)
    dot.close_cluster()
    return final_id


def _draw_block(dot: _Dot, summary: ModelSummary, block: BlockSummary, previous: str, expanded: bool,
                t: Translate) -> str:
    """Draw one block and return the node its successor connects from."""
    if expanded:
        return _draw_block_expanded(dot, summary, block, previous, t)
    return _draw_block_collapsed(dot, block, previous, t)


def _drawn_blocks(blocks: list[BlockSummary]) -> tuple[list[BlockSummary], int, list[BlockSummary]]:
    """Split a long stage into (drawn first, number hidden, drawn last)."""
    if len(blocks) <= MAX_DRAWN_BLOCKS:
        return blocks, 0, []
    return blocks[:DRAWN_HEAD_BLOCKS], len(blocks) - DRAWN_HEAD_BLOCKS - 1, blocks[-1:]


def _draw_stage(dot: _Dot, summary: ModelSummary, stage: str, previous: str, expanded_blocks: set[str],
                t: Translate) -> str:
    group = summary.group(stage)
    blocks = [block for block in summary.blocks if block.group == stage]
    title = t("arch.dot_stage", name=stage, n=group.num_blocks, block=blocks[0].kind)
    dot.open_cluster(_node_id(stage), f"{title} · {_numbers_line(group.params, group.macs, t)}", "#e9eef6")
    first, hidden, last = _drawn_blocks(blocks)
    for block in first:
        previous = _draw_block(dot, summary, block, previous, block.name in expanded_blocks, t)
    if hidden:
        ellipsis_id = _node_id(stage) + "_more"
        dot.node(ellipsis_id, t("arch.dot_more_blocks", n=hidden), extra='style="dashed,rounded"')
        dot.edge(previous, ellipsis_id)
        previous = ellipsis_id
    for block in last:
        previous = _draw_block(dot, summary, block, previous, block.name in expanded_blocks, t)
    dot.close_cluster()
    return previous


def _group_label(summary: ModelSummary, name: str, t: Translate) -> str:
    group = summary.group(name)
    rows = [row for row in summary.rows if row.group == name]
    operations = " → ".join(f"{row.kind} {row.detail}".strip() for row in rows)
    return f"{name}\n{operations}\n{format_shape(group.output_shape)} · {_numbers_line(group.params, group.macs, t)}"


def diagram_dot(summary: ModelSummary, expanded_stages: set[str], expanded_blocks: set[str],
                t: Translate) -> str:
    """Graphviz DOT of the network: input → stem → stages → head → output.

    Stages in `expanded_stages` are drawn block by block (each with its "+" and the shortcut
    edge: identity, projection or zero-padding); blocks in `expanded_blocks` layer by layer.
    """
    dot = _Dot()
    dot.node("input", t("arch.dot_input", shape=format_shape(summary.input_shape)),
             extra='shape=oval, fillcolor="#ffffff"')
    dot.node("stem", _group_label(summary, "stem", t), extra='fillcolor="#e8e8e8", color="#777777"')
    dot.edge("input", "stem")
    previous = "stem"

    for group in summary.groups:
        if not group.name.startswith("layer"):
            continue
        if group.name in expanded_stages:
            previous = _draw_stage(dot, summary, group.name, previous, expanded_blocks, t)
            continue
        blocks = [block for block in summary.blocks if block.group == group.name]
        residual = blocks[0].shortcut != SHORTCUT_NONE
        kind_key = "arch.dot_residual" if residual else "arch.dot_plain"
        label = (f"{t('arch.dot_stage', name=group.name, n=group.num_blocks, block=blocks[0].kind)}\n"
                 f"{t(kind_key)} · {format_shape(group.output_shape)}\n"
                 f"{_numbers_line(group.params, group.macs, t)}")
        dot.node(_node_id(group.name), label, tooltip=t("arch.dot_expand_tooltip"))
        dot.edge(previous, _node_id(group.name))
        previous = _node_id(group.name)

    dot.node("head", _group_label(summary, "head", t), extra='fillcolor="#e8e8e8", color="#777777"')
    dot.edge(previous, "head")
    dot.node("output", t("arch.dot_output", n=summary.output_shape[0]), extra='shape=oval, fillcolor="#ffffff"')
    dot.edge("head", "output")
    return dot.source()


# --- Tables ----------------------------------------------------------------------------------

LAYER_COLUMNS = ("name", "kind", "detail", "group", "output", "params", "macs", "trainable")
STAGE_COLUMNS = ("group", "blocks", "output", "params", "macs")


def layer_table(summary: ModelSummary, only_weighted: bool = False, group: str | None = None) -> pd.DataFrame:
    """Return one row per layer call; `only_weighted` keeps the layers that own parameters."""
    rows = [row for row in summary.rows
            if (not only_weighted or row.params) and (group is None or row.group == group)]
    return pd.DataFrame(
        {
            "name": [row.name for row in rows],
            "kind": [row.kind for row in rows],
            "detail": [row.detail for row in rows],
            "group": [row.group for row in rows],
            "output": [format_shape(row.output_shape) for row in rows],
            "params": [row.params for row in rows],
            "macs": [row.macs for row in rows],
            "trainable": [row.trainable for row in rows],
        },
        columns=list(LAYER_COLUMNS),
    )


def stage_table(summary: ModelSummary) -> pd.DataFrame:
    """Return one row per layer group (stem, stages, head) with its totals."""
    return pd.DataFrame(
        {
            "group": [group.name for group in summary.groups],
            "blocks": [group.num_blocks for group in summary.groups],
            "output": [format_shape(group.output_shape) for group in summary.groups],
            "params": [group.params for group in summary.groups],
            "macs": [group.macs for group in summary.groups],
        },
        columns=list(STAGE_COLUMNS),
    )
