"""core.models against torchvision 0.29 and the CIFAR numbers of He et al. 2016."""

import pytest
import torch
import torchvision
from torch import nn

from core.errors import LabError
from core.groups import default_groups, group_parameter_counts, params_by_group
from core.models import (
    ResNetConfig,
    build_resnet,
    canonical_name,
    cifar_config,
    count_parameters,
    feature_size,
    imagenet_config,
    validate,
    weighted_depth,
)

# torchvision.models.resnetN() parameter counts, as printed by torchvision 0.29.1.
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# CIFAR ResNets with option A shortcuts (no parameters on the shortcut), 10 classes.
# He et al. 2016 Table 6 rounds them to 0.27M, 0.46M, 0.66M, 0.85M and 1.7M.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_imagenet_param_count_matches_torchvision(depth):
    ours = build_resnet(imagenet_config(depth))
    reference = getattr(torchvision.models, f"resnet{depth}")()
    assert count_parameters(ours) == TORCHVISION_PARAMS[depth]
    assert count_parameters(reference) == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize("depth", [18, 50])
def test_state_dict_loads_strictly_both_ways(depth):
    ours = build_resnet(imagenet_config(depth))
    reference = getattr(torchvision.models, f"resnet{depth}")()
    reference.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())


def test_forward_equals_torchvision_with_same_weights():
    reference = torchvision.models.resnet18().eval()
    ours = build_resnet(imagenet_config(18)).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_param_count_option_a(depth):
    config = cifar_config(depth)
    assert count_parameters(build_resnet(config)) == CIFAR_PARAMS[depth]
    assert weighted_depth(config) == depth
    assert canonical_name(config) == f"ResNet-{depth}"


def test_cifar_n_200_builds():
    config = cifar_config(6 * 200 + 2)
    assert config.stage_blocks == (200, 200, 200)
    assert weighted_depth(config) == 1202


def test_cifar_output_shape():
    model = build_resnet(cifar_config(20))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_bottleneck_depth_form():
    config = cifar_config(29, block="bottleneck")
    assert config.stage_blocks == (3, 3, 3)
    assert weighted_depth(config) == 29


@pytest.mark.parametrize("depth, block", [(21, "basic"), (21, "bottleneck"), (2, "basic")])
def test_cifar_bad_depth_rejected(depth, block):
    with pytest.raises(LabError) as error:
        cifar_config(depth, block=block)
    assert error.value.key == "errors.cifar_depth"


def test_plain_twin_has_no_shortcut_modules():
    plain = build_resnet(imagenet_config(34, skip=False))
    assert not any(name.endswith("downsample") for name, _ in plain.named_modules())
    assert canonical_name(plain.config) == "Plain-34"


def test_plain_twin_cifar_same_params_as_option_a():
    # Option A shortcuts carry no weights, so the plain twin has exactly the same parameters.
    assert count_parameters(build_resnet(cifar_config(20, skip=False))) == CIFAR_PARAMS[20]


def test_basic_blocks_with_resnet50_stages_is_resnet34():
    config = imagenet_config(50).replace(block="basic")
    assert weighted_depth(config) == 34
    assert canonical_name(config) == "ResNet-34"


def test_custom_stage_counts_have_no_canonical_name():
    config = imagenet_config(18).replace(stage_blocks=(1, 1, 1, 1))
    assert weighted_depth(config) == 10
    assert canonical_name(config) is None


def test_zero_pad_shortcut_keeps_identity_channels():
    model = build_resnet(cifar_config(20)).eval()
    shortcut = model.layer2[0].downsample
    x = torch.randn(1, 16, 32, 32)
    y = shortcut(x)
    assert y.shape == (1, 32, 16, 16)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_without_batch_norm_has_no_bn_layers():
    model = build_resnet(cifar_config(20, batch_norm=False))
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())


def test_zero_gamma_zeroes_last_branch_bn():
    model = build_resnet(imagenet_config(50, init="zero_gamma"))
    for _, block in model.blocks():
        assert torch.count_nonzero(block.bn3.weight) == 0
        assert torch.count_nonzero(block.bn2.weight) == block.bn2.weight.numel()


def test_zero_gamma_block_is_identity_at_init():
    model = build_resnet(cifar_config(20, init="zero_gamma")).eval()
    block = model.layer1[1]
    x = torch.relu(torch.randn(2, 16, 8, 8))
    torch.testing.assert_close(block(x), x)


def test_fixup_zeroes_last_conv_and_head():
    model = build_resnet(cifar_config(20, init="fixup", batch_norm=False))
    for _, block in model.blocks():
        assert torch.count_nonzero(block.conv2.weight) == 0
        assert block.branch_scale is not None
    assert torch.count_nonzero(model.fc.weight) == 0


def test_default_init_differs_from_he():
    he = build_resnet(cifar_config(20), seed=0)
    default = build_resnet(cifar_config(20, init="default"), seed=0)
    assert not torch.equal(he.conv1.weight, default.conv1.weight)


def test_seed_makes_weights_reproducible():
    first = build_resnet(cifar_config(20), seed=3)
    second = build_resnet(cifar_config(20), seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("input_size, expected", [(224, 7), (32, 1), (33, 2), (100, 4)])
def test_feature_size_matches_forward(input_size, expected):
    config = imagenet_config(18, input_size=input_size)
    model = build_resnet(config).eval()
    x = torch.randn(1, 3, input_size, input_size)
    with torch.no_grad():
        features = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for stage in model.stages:
            features = stage(features)
    assert feature_size(config) == expected
    assert features.shape[-1] == expected


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"stage_blocks": ()}, "errors.stage_counts"),
        ({"stage_blocks": (2, 0, 2, 2)}, "errors.stage_counts"),
        ({"stage_blocks": (1, 1, 1, 1, 1)}, "errors.stage_counts"),
        ({"input_size": 16}, "errors.input_size"),
        ({"base_width": 4096}, "errors.base_width"),
        ({"base_width": 0}, "errors.base_width"),
        ({"num_classes": 0}, "errors.num_classes"),
        ({"block": "dense"}, "errors.bad_choice"),
        ({"in_channels": 2}, "errors.in_channels"),
    ],
)
def test_invalid_config_rejected(changes, key):
    with pytest.raises(LabError) as error:
        validate(imagenet_config(18).replace(**changes))
    assert error.value.key == key
    assert str(error.value)  # an English message, not the bare key
    assert not str(error.value).startswith("errors.")


def test_config_round_trip():
    config = cifar_config(56, skip=False, init="zero_gamma")
    assert ResNetConfig.from_dict(config.to_dict()) == config


def test_config_unknown_field_rejected():
    with pytest.raises(LabError):
        ResNetConfig.from_dict({**imagenet_config(18).to_dict(), "dropout": 0.5})


def test_default_groups_cover_every_parameter():
    model = build_resnet(imagenet_config(18))
    groups = default_groups(model)
    assert list(groups) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    counts = group_parameter_counts(model, groups)
    assert sum(counts.values()) == TORCHVISION_PARAMS[18]
    assert counts["head"] == 512 * 1000 + 1000
    assert counts["stem"] == 64 * 3 * 7 * 7 + 2 * 64


def test_cifar_groups_have_three_stages():
    groups = default_groups(build_resnet(cifar_config(20)))
    assert list(groups) == ["stem", "layer1", "layer2", "layer3", "head"]


def test_group_overlap_named():
    model = build_resnet(cifar_config(20))
    groups = {**default_groups(model), "extra": ["layer1.0"]}
    with pytest.raises(LabError) as error:
        params_by_group(model, groups)
    assert error.value.key == "errors.groups_overlap"
    assert "layer1.0.conv1.weight" in str(error.value)


def test_group_orphan_named():
    model = build_resnet(cifar_config(20))
    groups = default_groups(model)
    del groups["head"]
    with pytest.raises(LabError) as error:
        params_by_group(model, groups)
    assert error.value.key == "errors.groups_orphans"
    assert "fc.weight" in str(error.value)
