"""core.summary and core.architecture against torchvision 0.29, closed forms and the CIFAR paper."""

import re

import pytest
import torch
import torchvision
from torch import nn

from core.architecture import (
    ArchChoice,
    canonical_block,
    choice_from_config,
    default_choice,
    diagram_dot,
    format_count,
    format_macs,
    layer_table,
    parse_stage_blocks,
    stage_table,
)
import core.summary
from core.errors import LabError
from core.models import ResNetConfig, build_resnet, cifar_config, imagenet_config, weighted_depth
from core.summary import (
    MAX_SUMMARY_BLOCKS,
    SHORTCUT_IDENTITY,
    SHORTCUT_NONE,
    SHORTCUT_PROJECTION,
    SHORTCUT_ZERO_PAD,
    summarize_config,
    summarize_model,
)

IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
# torchvision 0.29.1 ResNetN_Weights.IMAGENET1K_V1.meta["num_params"], copied as published.
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
MACS_TOLERANCE = 0.005  # 0.5 %, the accuracy the Arquitectura page promises
# Option A (zero-padding) CIFAR ResNets with 10 classes; He et al. 2016 Table 6 rounds them to
# 0.27M, 0.46M, 0.66M, 0.85M and 1.7M.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}
CIFAR_PAPER_MILLIONS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def english(key: str, **params: object) -> str:
    """A stand-in translator for diagram tests: returns the key and its parameters."""
    return key + "".join(f" {name}={value}" for name, value in sorted(params.items()))


@pytest.fixture(scope="module")
def imagenet_summaries():
    return {depth: summarize_config(imagenet_config(depth)) for depth in IMAGENET_DEPTHS}


def _torchvision_on_meta(depth: int) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, f"resnet{depth}")()


def _torchvision_output_shapes(model: nn.Module, size: int) -> dict[str, tuple[int, ...]]:
    """Reference shapes: the last output of every module with parameters, from torchvision itself."""
    shapes = {}
    handles = [module.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
               for name, module in model.named_modules() if list(module.parameters(recurse=False))]
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, size, size, device="meta"))
    for handle in handles:
        handle.remove()
    return shapes


# --- Exactness against torchvision -----------------------------------------------------------

@pytest.mark.parametrize("depth", IMAGENET_DEPTHS)
def test_total_params_match_torchvision(imagenet_summaries, depth):
    reference = sum(p.numel() for p in _torchvision_on_meta(depth).parameters())
    assert imagenet_summaries[depth].total_params == reference == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize("depth", IMAGENET_DEPTHS)
def test_macs_within_half_percent_of_torchvision_metadata(imagenet_summaries, depth):
    weights = getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1
    published = weights.meta["_ops"] * 1e9  # GFLOPS in torchvision's naming, counted as MACs
    measured = imagenet_summaries[depth].total_macs
    assert abs(measured - published) / published < MACS_TOLERANCE, f"{measured} vs {published}"


@pytest.mark.parametrize("depth", [18, 50])
def test_per_layer_params_and_shapes_match_torchvision(imagenet_summaries, depth):
    reference = _torchvision_on_meta(depth)
    reference_params = {name: sum(p.numel() for p in module.parameters(recurse=False))
                        for name, module in reference.named_modules() if list(module.parameters(recurse=False))}
    reference_shapes = _torchvision_output_shapes(reference, 224)
    rows = {row.name: row for row in imagenet_summaries[depth].rows if row.params}
    assert {name: row.params for name, row in rows.items()} == reference_params
    assert {name: row.output_shape for name, row in rows.items()} == reference_shapes


def test_resnet50_first_conv_macs_closed_form(imagenet_summaries):
    conv1 = next(row for row in imagenet_summaries[50].rows if row.name == "conv1")
    assert conv1.output_shape == (64, 112, 112)
    assert conv1.macs == 64 * 112 * 112 * 3 * 7 * 7  # outputs × (C_in · k · k)


@pytest.mark.parametrize("depth", IMAGENET_DEPTHS)
def test_weighted_layers_are_the_depth(imagenet_summaries, depth):
    summary = imagenet_summaries[depth]
    assert summary.weighted_layers == depth == weighted_depth(imagenet_config(depth))
    assert summary.canonical_name == f"ResNet-{depth}"


@pytest.mark.parametrize("depth", [18, 152])
def test_groups_add_up_to_totals(imagenet_summaries, depth):
    summary = imagenet_summaries[depth]
    assert [group.name for group in summary.groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(group.params for group in summary.groups) == summary.total_params
    assert sum(group.macs for group in summary.groups) == summary.total_macs
    assert sum(group.num_blocks for group in summary.groups) == len(summary.blocks)


def test_resnet18_stage_shapes(imagenet_summaries):
    shapes = {group.name: group.output_shape for group in imagenet_summaries[18].groups}
    assert shapes == {"stem": (64, 56, 56), "layer1": (64, 56, 56), "layer2": (128, 28, 28),
                      "layer3": (256, 14, 14), "layer4": (512, 7, 7), "head": (1000,)}


# --- CIFAR family ----------------------------------------------------------------------------

def _cifar_option_a_params(n: int, num_classes: int = 10) -> int:
    """Closed form for the CIFAR ResNet with zero-padding shortcuts (no shortcut weights)."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    in_channels = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += in_channels * width * 9 + 2 * width  # conv1 + bn1
            total += width * width * 9 + 2 * width  # conv2 + bn2
            in_channels = width
    return total + 64 * num_classes + num_classes  # fc


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_params_option_a(depth):
    summary = summarize_config(cifar_config(depth))
    assert summary.total_params == CIFAR_PARAMS[depth] == _cifar_option_a_params((depth - 2) // 6)
    assert round(summary.total_params / 1e6, 2 if depth < 100 else 1) == CIFAR_PAPER_MILLIONS[depth]
    assert summary.weighted_layers == depth


def test_cifar_uses_zero_padding_where_size_changes():
    summary = summarize_config(cifar_config(20))
    kinds = {block.name: block.shortcut for block in summary.blocks}
    assert kinds["layer2.0"] == kinds["layer3.0"] == SHORTCUT_ZERO_PAD
    assert kinds["layer1.0"] == kinds["layer2.1"] == SHORTCUT_IDENTITY
    assert summary.group("layer3").output_shape == (64, 8, 8)


def test_cifar_macs_closed_form():
    summary = summarize_config(cifar_config(20))
    stem = 32 * 32 * 16 * 3 * 9
    stage1 = 6 * 32 * 32 * 16 * 16 * 9
    stage2 = 16 * 16 * 32 * 16 * 9 + 5 * 16 * 16 * 32 * 32 * 9
    stage3 = 8 * 8 * 64 * 32 * 9 + 5 * 8 * 8 * 64 * 64 * 9
    assert summary.total_macs == stem + stage1 + stage2 + stage3 + 64 * 10


# --- Variants: plain twin, shortcuts, pairings, trainable -----------------------------------

def test_plain_twin_drops_only_the_projections(imagenet_summaries):
    plain = summarize_config(imagenet_config(18, skip=False))
    projections = sum(row.params for row in imagenet_summaries[18].rows if row.on_shortcut)
    # layer2.0, layer3.0, layer4.0: a 1×1 conv C -> 2C and a BN (γ, β) on 2C channels.
    assert projections == (64 * 128 + 2 * 128) + (128 * 256 + 2 * 256) + (256 * 512 + 2 * 512)
    assert plain.total_params == TORCHVISION_PARAMS[18] - projections
    assert {block.shortcut for block in plain.blocks} == {SHORTCUT_NONE}
    assert plain.canonical_name == "Plain-18"


def test_zero_pad_twin_has_the_plain_parameter_count():
    residual = summarize_config(imagenet_config(34, shortcut="zero_pad"))
    plain = summarize_config(imagenet_config(34, skip=False))
    assert residual.total_params == plain.total_params
    assert {block.shortcut for block in residual.blocks} == {SHORTCUT_IDENTITY, SHORTCUT_ZERO_PAD}


def test_resnet50_stage_counts_with_basic_blocks_are_resnet34():
    summary = summarize_config(imagenet_config(50, block="basic"))
    assert summary.weighted_layers == 34
    assert summary.canonical_name == "ResNet-34"
    assert summary.total_params == TORCHVISION_PARAMS[34]


def test_bottleneck_resnet18_counts_uncanonical():
    summary = summarize_config(imagenet_config(18, block="bottleneck"))
    assert summary.weighted_layers == 26
    assert summary.canonical_name is None


def test_bottleneck_projection_on_first_block(imagenet_summaries):
    kinds = {block.name: block.shortcut for block in imagenet_summaries[50].blocks}
    assert kinds["layer1.0"] == SHORTCUT_PROJECTION  # 64 -> 256 channels, same resolution
    assert kinds["layer1.1"] == SHORTCUT_IDENTITY


def test_fixup_block_scalars_are_counted():
    summary = summarize_config(imagenet_config(18, init="fixup"))
    assert summary.total_params == TORCHVISION_PARAMS[18] + 8  # one scalar per block


def test_trainable_flags_follow_requires_grad():
    torch.manual_seed(0)
    model = build_resnet(cifar_config(8))
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith(("conv1", "bn1", "layer1"))
    summary = summarize_model(model, (3, 32, 32))
    groups = {group.name: group for group in summary.groups}
    assert groups["layer1"].trainable_params == 0
    assert groups["layer2"].trainable_params == groups["layer2"].params > 0
    assert summary.trainable_params == summary.total_params - groups["stem"].params - groups["layer1"].params
    assert {row.trainable for row in summary.rows if row.group == "layer1" and row.params} == {False}
    assert {row.trainable for row in summary.rows if row.kind == "ReLU"} == {None}


def test_meta_summary_equals_summary_of_a_real_model():
    config = cifar_config(14)
    real = summarize_model(build_resnet(config, seed=0), (3, 32, 32))
    meta = summarize_config(config)
    assert [(r.name, r.output_shape, r.params, r.macs) for r in meta.rows] == \
        [(r.name, r.output_shape, r.params, r.macs) for r in real.rows]


def test_input_size_changes_shapes_and_macs_not_params():
    small = summarize_config(imagenet_config(18, input_size=112))
    assert small.total_params == TORCHVISION_PARAMS[18]
    assert small.group("layer4").output_shape == (512, 4, 4)
    assert small.total_macs < summarize_config(imagenet_config(18, input_size=224)).total_macs / 3


# --- Invalid configurations ------------------------------------------------------------------

@pytest.mark.parametrize("changes, key", [
    ({"stage_blocks": (2, 0, 2)}, "errors.stage_counts"),
    ({"stage_blocks": (1, 1, 1, 1, 1)}, "errors.stage_counts"),
    ({"stage_blocks": ()}, "errors.stage_counts"),
    ({"input_size": 16}, "errors.input_size"),
    ({"base_width": 100_000}, "errors.base_width"),
    ({"base_width": 0}, "errors.base_width"),
    ({"num_classes": 0}, "errors.num_classes"),
])
def test_invalid_configs_raise_lab_errors(changes, key):
    with pytest.raises(LabError) as error:
        summarize_config(imagenet_config(18, **changes))
    assert error.value.key == key


def test_too_many_blocks_for_a_summary():
    per_stage = MAX_SUMMARY_BLOCKS // 3 + 1
    with pytest.raises(LabError) as error:
        summarize_config(cifar_config(6 * per_stage + 2))
    assert error.value.key == "arch.err_too_many_blocks"
    assert error.value.params == {"value": 3 * per_stage, "maximum": MAX_SUMMARY_BLOCKS}


@pytest.mark.parametrize("text, expected", [("3, 4, 6, 3", (3, 4, 6, 3)), ("2 2 2", (2, 2, 2)),
                                            ("5;5", (5, 5)), (" 1 ", (1,))])
def test_parse_stage_blocks(text, expected):
    assert parse_stage_blocks(text) == expected


@pytest.mark.parametrize("text", ["a, b", "", "3.5, 2", "  ,  "])
def test_parse_stage_blocks_rejects_text(text):
    with pytest.raises(LabError) as error:
        parse_stage_blocks(text)
    assert error.value.key == "arch.err_stage_text"


# --- The page's form ---------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    imagenet_config(18), imagenet_config(50), imagenet_config(50, block="basic"), imagenet_config(152, skip=False),
    cifar_config(56), cifar_config(20, block="bottleneck"), cifar_config(1202),
    imagenet_config(34, stage_blocks=(1, 2, 3), stem="cifar", base_width=32, input_size=64, num_classes=7),
    imagenet_config(18, stage_blocks=(5, 1), shortcut="zero_pad", init="fixup", batch_norm=False),
], ids=lambda config: f"{config.stage_blocks}-{config.block}-{config.stem}")
def test_choice_round_trip(config):
    choice = choice_from_config(config)
    assert choice.to_config(base=config) == config


def test_choice_keeps_fields_the_page_does_not_show():
    base = imagenet_config(18, init="zero_gamma", batch_norm=False, in_channels=1)
    config = ArchChoice(imagenet_depth=50, block="bottleneck").to_config(base=base)
    assert (config.init, config.batch_norm, config.in_channels) == ("zero_gamma", False, 1)
    assert config.stage_blocks == (3, 4, 6, 3)


def test_default_choices_are_the_canonical_smallest_models():
    assert default_choice("imagenet").to_config() == imagenet_config(18)
    assert default_choice("cifar").to_config() == cifar_config(20)


@pytest.mark.parametrize("family, depth, block", [("imagenet", 18, "basic"), ("imagenet", 34, "basic"),
                                                  ("imagenet", 50, "bottleneck"), ("imagenet", 152, "bottleneck"),
                                                  ("cifar", 50, "basic")])
def test_canonical_block_pairing(family, depth, block):
    assert canonical_block(family, depth) == block


# --- Diagram and tables ----------------------------------------------------------------------

def _dot_nodes_and_edges(source: str) -> tuple[set[str], list[tuple[str, str]]]:
    nodes = set(re.findall(r"^(\w+) \[label=", source, flags=re.MULTILINE))
    edges = re.findall(r"^(\w+) -> (\w+)", source, flags=re.MULTILINE)
    return nodes, edges


def test_diagram_collapsed_is_a_chain_through_the_stages(imagenet_summaries):
    source = diagram_dot(imagenet_summaries[50], set(), set(), english)
    nodes, edges = _dot_nodes_and_edges(source)
    assert nodes == {"input", "stem", "n_layer1", "n_layer2", "n_layer3", "n_layer4", "head", "output"}
    assert ("n_layer4", "head") in edges
    assert "arch.dot_stage block=Bottleneck n=6 name=layer3" in source
    assert source.count("{") == source.count("}")


def test_diagram_expanded_block_draws_branch_and_projection(imagenet_summaries):
    source = diagram_dot(imagenet_summaries[18], {"layer2"}, {"layer2.0"}, english)
    nodes, edges = _dot_nodes_and_edges(source)
    assert all(source_id in nodes and target_id in nodes for source_id, target_id in edges)
    assert "downsample.0 · Conv2d 1×1 /2, 64→128" in source
    assert "conv1 · Conv2d 3×3 /2, 64→128" in source
    # The projection leaves the block's input (layer1's node) and meets the branch at "+".
    from_layer1 = [target for source_id, target in edges if source_id == "n_layer1"]
    assert len(from_layer1) == 2  # conv1 of the branch, downsample.0 of the shortcut
    assert ("n_layer2_1_add", "n_layer3") in edges
    assert "arch.dot_identity" in source  # layer2.1, collapsed, keeps an identity shortcut edge


def test_diagram_plain_twin_has_no_additions():
    summary = summarize_config(imagenet_config(18, skip=False))
    source = diagram_dot(summary, {"layer1", "layer2"}, {"layer2.0"}, english)
    assert "_add" not in source
    assert "arch.dot_plain" in source


def test_diagram_long_stage_is_abbreviated(imagenet_summaries):
    source = diagram_dot(imagenet_summaries[152], {"layer3"}, set(), english)
    assert "arch.dot_more_blocks n=29" in source  # 36 blocks: 6 drawn, 29 hidden, the last drawn
    assert "n_layer3_35 [" in source
    assert "n_layer3_6 [" not in source


def test_diagram_zero_pad_edge(imagenet_summaries):
    summary = summarize_config(cifar_config(20))
    source = diagram_dot(summary, {"layer2"}, set(), english)
    assert "arch.dot_zero_pad" in source


def test_layer_table_filters(imagenet_summaries):
    summary = imagenet_summaries[18]
    table = layer_table(summary)
    weighted = layer_table(summary, only_weighted=True)
    assert table["params"].sum() == weighted["params"].sum() == TORCHVISION_PARAMS[18]
    assert len(weighted) == 18 + 17 + 6  # 17 convs + fc, 17 BN, 3 downsample convs + 3 BN
    assert set(layer_table(summary, group="head")["name"]) == {"avgpool", "fc"}


def test_stage_table_rows(imagenet_summaries):
    table = stage_table(imagenet_summaries[34])
    assert list(table["blocks"]) == [0, 3, 4, 6, 3, 0]
    assert table["params"].sum() == TORCHVISION_PARAMS[34]


@pytest.mark.parametrize("macs, text", [(1_814_073_344, "1.81 G"), (40_551_040, "40.6 M"), (640, "640"),
                                        (11_513_626_624, "11.5 G")])
def test_format_macs(macs, text):
    assert format_macs(macs) == text


def test_format_count():
    assert format_count(11_689_512) == "11,689,512"


def test_config_dict_is_stored_with_the_summary():
    config = cifar_config(32)
    summary = summarize_config(config)
    assert ResNetConfig.from_dict(summary.config) == config


def test_choice_with_empty_custom_stages_is_an_error():
    with pytest.raises(LabError) as error:
        ArchChoice(custom_stages="").to_config()
    assert error.value.key == "arch.err_stage_text"


def test_cifar_n_200_summarises():
    """ResNet-1202, the paper's deepest CIFAR network (He et al. 2016 Table 6: 19.4M parameters)."""
    summary = summarize_config(cifar_config(1202))
    assert summary.weighted_layers == 1202
    assert summary.total_params == 19_421_274 == _cifar_option_a_params(200)


def test_meta_path_and_cpu_path_agree(monkeypatch):
    config = imagenet_config(50, input_size=96)
    on_cpu = summarize_config(config)
    monkeypatch.setattr(core.summary, "MAX_CPU_SUMMARY_PARAMS", 0)  # force the meta-device pass
    on_meta = summarize_config(config)
    assert on_meta.rows == on_cpu.rows
    assert on_meta.blocks == on_cpu.blocks


def test_absurd_width_is_counted_without_memory():
    """Base width 512 makes ResNet-18 about 740M parameters: counted on the meta device."""
    config = imagenet_config(18, base_width=512)
    with torch.device("meta"):
        reference = sum(p.numel() for p in build_resnet(config).parameters())
    summary = summarize_config(config)
    assert summary.total_params == reference > core.summary.MAX_CPU_SUMMARY_PARAMS
    assert summary.group("layer4").output_shape == (4096, 7, 7)


def test_choice_rejects_unknown_imagenet_depth():
    with pytest.raises(LabError) as error:
        ArchChoice(imagenet_depth=42).to_config()
    assert error.value.params == {"depth": 42, "allowed": "18, 34, 50, 101, 152"}
