"""The gradient-flow probe against autograd, and the facts the Gradientes page teaches.

Every fact is measured on the lab's own networks (core.models) with fixed seeds, on the same
batch for every network compared. Thresholds sit one or more orders of magnitude away from
the measured values (noted beside each), so they pin the phenomenon, not a float.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import LabError
from core.gradients import (STEM, ProbeSettings, compare, layer_findings, probe, probe_batches, probe_steps,
                            signal_findings, step_findings)
from core.models import build_resnet, cifar_config, imagenet_config
from core.shattered import lag_correlation, shattered

# Relative tolerance between the probe and per-parameter autograd: both are float32 sums of
# the same products; only the order of the final reduction may differ.
REL_TOL = 1e-5


def _batch(config, batch_size=8, data="noise", seed=0):
    return probe_batches(ProbeSettings(batch_size=batch_size, data=data, seed=seed), config)[0]


def _reference_norms(model, images, labels):
    """‖∂L/∂p‖ for every parameter, one torch.autograd.grad call per parameter."""
    model.train()
    loss = F.cross_entropy(model(images), labels)
    norms = {}
    for name, parameter in model.named_parameters():
        (grad,) = torch.autograd.grad(loss, [parameter], retain_graph=True, allow_unused=True)
        norms[name] = 0.0 if grad is None else grad.double().norm().item()
    return loss.item(), norms


def _reference_stds(model, images):
    """Output std of the stem and every block, by running the stages by hand."""
    model.train()
    stds = {}
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        stds[STEM] = x.std().item()
        for name, block in model.blocks():
            x = block(x)
            stds[name] = x.std().item()
    return stds


PROBED_CONFIGS = {
    "cifar20-basic": cifar_config(20),
    "cifar14-plain-nobn": cifar_config(14, skip=False, batch_norm=False, init="default"),
    "cifar11-bottleneck": cifar_config(11, block="bottleneck"),
    "imagenet18-projection-64px": imagenet_config(18, input_size=64, num_classes=10, base_width=8),
    "cifar8-fixup": cifar_config(8, batch_norm=False, init="fixup"),
}


class TestProbeMatchesAutograd:
    @pytest.mark.parametrize("name", list(PROBED_CONFIGS))
    def test_every_parameter_norm(self, name):
        config = PROBED_CONFIGS[name]
        model = build_resnet(config, seed=0)
        reference_model = copy.deepcopy(model)
        images, labels = _batch(config)

        result = probe(model, images, labels)
        loss, expected = _reference_norms(reference_model, images, labels)

        assert list(result.param_grad_norm) == list(expected)
        assert result.loss == pytest.approx(loss, rel=REL_TOL)
        for parameter, norm in expected.items():
            assert result.param_grad_norm[parameter] == pytest.approx(norm, rel=REL_TOL, abs=1e-30), parameter

    def test_block_and_group_aggregates(self):
        config = PROBED_CONFIGS["imagenet18-projection-64px"]
        model = build_resnet(config, seed=0)
        images, labels = _batch(config)
        result = probe(model, images, labels)

        grads = {name: p.grad for name, p in model.named_parameters()}
        block = torch.cat([g.flatten() for name, g in grads.items() if name.startswith("layer2.0.")])
        stem = torch.cat([g.flatten() for name, g in grads.items() if name.startswith(("conv1.", "bn1."))])
        assert result.block_grad_norm["layer2.0"] == pytest.approx(block.norm().item(), rel=REL_TOL)
        assert result.group_grad_norm["stem"] == pytest.approx(stem.norm().item(), rel=REL_TOL)
        assert list(result.group_grad_norm) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
        assert len(result.block_grad_norm) == 8

    def test_block_output_std(self):
        config = PROBED_CONFIGS["cifar20-basic"]
        model = build_resnet(config, seed=0)
        reference_model = copy.deepcopy(model)
        images, labels = _batch(config)
        result = probe(model, images, labels)
        expected = _reference_stds(reference_model, images)
        assert list(result.block_output_std) == list(expected)
        for name, std in expected.items():
            assert result.block_output_std[name] == pytest.approx(std, rel=REL_TOL), name

    def test_main_path_is_the_weighted_layers(self):
        config = cifar_config(20)
        result = probe(build_resnet(config, seed=0), *_batch(config))
        assert len(result.main_path) == 20
        assert result.main_path[:3] == ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight"]
        assert result.main_path[-1] == "fc.weight"

    def test_training_step_probe_equals_single_probe(self):
        """Step 0 of the multi-step probe (through the engine's TrainStep) is the same measurement."""
        config = cifar_config(8)
        settings = ProbeSettings(batch_size=8, data="noise", steps=2)
        batches = probe_batches(settings, config)
        single = probe(build_resnet(config, seed=0), *batches[0])
        stepped = probe_steps(build_resnet(config, seed=0), batches, settings)
        assert len(stepped) == 3
        assert stepped[0].loss == pytest.approx(single.loss, rel=REL_TOL)
        for name, norm in single.param_grad_norm.items():
            assert stepped[0].param_grad_norm[name] == pytest.approx(norm, rel=REL_TOL, abs=1e-30), name
        assert stepped[1].param_grad_norm["conv1.weight"] != stepped[0].param_grad_norm["conv1.weight"]


class TestSameBatchForEveryNetwork:
    def test_batches_depend_on_the_seed_only(self):
        settings = ProbeSettings(batch_size=4, data="noise", seed=3, steps=1)
        a = probe_batches(settings, cifar_config(20))
        b = probe_batches(settings, cifar_config(56, skip=False))
        assert len(a) == 2
        assert torch.equal(a[0][0], b[0][0])
        assert torch.equal(a[1][1], b[1][1])
        assert not torch.equal(a[0][0], a[1][0])

    def test_cifar_twins_start_from_identical_weights(self):
        """Zero-padding shortcuts have no parameters, so the twins differ only by the addition."""
        residual = build_resnet(cifar_config(20), seed=0).state_dict()
        plain = build_resnet(cifar_config(20, skip=False), seed=0).state_dict()
        assert list(residual) == list(plain)
        assert all(torch.equal(residual[name], plain[name]) for name in residual)

    def test_digit_batches_are_normalised_real_digits(self):
        settings = ProbeSettings(batch_size=64, data="digits", seed=1)
        (images, labels), = probe_batches(settings, cifar_config(20))
        assert images.shape == (64, 3, 32, 32)
        assert abs(images.mean().item()) < 0.2
        assert 0.7 < images.std().item() < 1.3
        assert torch.equal(images[:, 0], images[:, 1])  # grayscale digits replicated to RGB
        assert set(labels.tolist()) <= set(range(10))
        assert len(set(labels.tolist())) > 5
        again, = probe_batches(settings, cifar_config(56, skip=False))
        assert torch.equal(again[0], images)
        assert torch.equal(again[1], labels)

    def test_one_channel_large_input(self):
        (images, _), = probe_batches(ProbeSettings(batch_size=2), imagenet_config(18, in_channels=1, input_size=96))
        assert images.shape == (2, 1, 96, 96)

    def test_invalid_settings_raise_lab_errors(self):
        with pytest.raises(LabError) as error:
            ProbeSettings(batch_size=1).validate()
        assert error.value.key == "grad.err_batch_size"
        with pytest.raises(LabError):
            ProbeSettings(data="cifar").validate()
        with pytest.raises(LabError):
            ProbeSettings(lr=float("nan")).validate()


def _step0(config, data, batch_size=16):
    return probe(build_resnet(config, seed=0), *_batch(config, batch_size=batch_size, data=data))


DATA = pytest.mark.parametrize("data", ["digits", "noise"])


class TestFactsWithBatchNorm:
    """He et al. 2016 §4.1: the plain nets had BN and their gradients did not vanish.
    Yang et al. 2019: with BN, a deep plain net's gradient grows toward the input at init."""

    @DATA
    def test_plain_ratio_explodes_with_depth(self, data):
        shallow = _step0(cifar_config(20, skip=False), data).first_last_ratio  # measured 11 (digits), 2.8 (noise)
        deep = _step0(cifar_config(56, skip=False), data).first_last_ratio  # measured 3.7e3, 2.5e3
        assert deep > 100 * shallow
        assert deep > 100

    @DATA
    def test_residual_ratio_stays_near_one(self, data):
        shallow = _step0(cifar_config(20), data).first_last_ratio  # measured 0.75 (digits), 0.21 (noise)
        deep = _step0(cifar_config(56), data).first_last_ratio  # measured 0.60, 0.46
        assert 0.05 < shallow < 2
        assert 0.05 < deep < 2
        assert deep / shallow < 4


class TestFactsWithoutBatchNorm:
    @DATA
    def test_plain_default_init_vanishes(self, data):
        result = _step0(cifar_config(20, skip=False, batch_norm=False, init="default"), data)
        norms = result.main_path_norms()
        assert norms[0] < 1e-5 * norms[-1]  # measured 4.9e-7 (digits), 1.5e-7 (noise)
        assert norms[0] < norms[len(norms) // 2] < norms[-1]

    @DATA
    def test_plain_default_init_underflows_to_zero_when_deep(self, data):
        result = _step0(cifar_config(56, skip=False, batch_norm=False, init="default"), data)
        assert result.param_grad_norm["conv1.weight"] == 0.0  # float32 underflow
        assert not result.diverged

    @DATA
    def test_residual_he_init_blows_up_with_depth(self, data):
        """Fixup, De & Smith 2020: each block adds its branch's variance to the stream."""
        results = [_step0(cifar_config(depth, batch_norm=False, init="he"), data) for depth in (8, 20, 56)]
        last_std = [list(r.block_output_std.values())[-1] for r in results]  # measured 0.42, 14, 2.3e3 (digits)
        head_norms = [r.param_grad_norm["fc.weight"] for r in results]  # measured 0.82, 1.0e2, 1.7e4 (digits)
        assert last_std[2] > 50 * last_std[1]
        assert last_std[1] > 5 * last_std[0]
        assert head_norms[2] > 50 * head_norms[1]
        assert head_norms[1] > 10 * head_norms[0]
        assert results[2].loss > 100  # measured 1.5e3; a uniform prediction gives ln 10 = 2.30

    def test_fixup_keeps_the_deep_residual_net_tame(self):
        result = _step0(cifar_config(56, batch_norm=False, init="fixup"), "noise")
        assert result.loss == pytest.approx(math.log(10), rel=1e-6)  # fc starts at zero: uniform logits
        assert list(result.block_output_std.values())[-1] < 1


class TestZeroGamma:
    """Goyal et al. 2017: with γ=0 on the last BN of each branch, every block starts as the identity."""

    @pytest.fixture(scope="class")
    @classmethod
    def steps(cls):
        config = cifar_config(20, init="zero_gamma")
        settings = ProbeSettings(batch_size=16, data="noise", steps=1)
        return probe_steps(build_resnet(config, seed=0), probe_batches(settings, config), settings)

    def test_branch_weights_get_exact_zero(self, steps):
        step0 = steps[0].param_grad_norm
        inside = [n for n in step0 if ".conv" in n or ".bn1." in n]
        assert len(inside) == 9 * 4  # 9 blocks × (conv1, bn1.weight, bn1.bias, conv2)
        assert all(step0[n] == 0.0 for n in inside)

    def test_zeroed_bn_gets_gradient(self, steps):
        step0 = steps[0].param_grad_norm
        assert all(step0[f"layer{s}.{b}.bn2.{p}"] > 0 for s in (1, 2, 3) for b in range(3) for p in ("weight", "bias"))

    def test_stem_and_head_get_gradient_through_the_identity(self, steps):
        assert steps[0].param_grad_norm["conv1.weight"] > 1e-3
        assert steps[0].param_grad_norm["fc.weight"] > 1e-3

    def test_after_one_step_the_branches_learn(self, steps):
        step1 = steps[1].param_grad_norm
        assert all(step1[n] > 0 for n in step1 if ".conv" in n)

    def test_plain_twin_with_zero_gamma_is_dead(self):
        result = _step0(cifar_config(20, skip=False, init="zero_gamma"), "noise")
        assert list(result.block_output_std.values())[-1] == 0.0
        assert result.first_last_ratio is None
        assert [n for n, v in result.param_grad_norm.items() if v > 0] == ["fc.bias"]


class TestDivergence:
    def test_residual_without_bn_diverges(self):
        config = cifar_config(56, batch_norm=False, init="he")
        settings = ProbeSettings(batch_size=8, data="noise", steps=4, lr=0.1)
        results = compare(config, settings)
        residual = results["residual"]
        assert residual[-1].diverged
        assert residual[-1].first_last_ratio is None
        assert len(residual) <= 5
        assert not any(r.diverged for r in residual[:-1])
        assert not results["plain"][0].diverged

    def test_non_finite_input_is_reported_where_it_appears(self):
        config = cifar_config(8)
        images, labels = _batch(config)
        images[0, 0, 0, 0] = float("inf")
        result = probe(build_resnet(config, seed=0), images, labels)
        assert result.diverged
        assert result.divergence["where"] == "forward"


class TestShatteredGradients:
    def test_lag_correlation_exact_values(self):
        rows = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
        assert lag_correlation(rows, 2) == pytest.approx([0.0, -1.0])  # (1 + -1)/2, then -1

    def test_zero_rows_are_skipped(self):
        rows = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0], [1.0, 2.0, 4.0]])
        correlations = lag_correlation(rows, 2)
        assert math.isnan(correlations[0])
        assert correlations[1] == pytest.approx(1.0)

    def test_deep_plain_gradients_shatter_residual_ones_do_not(self):
        settings = ProbeSettings(batch_size=16, data="noise")
        results = shattered(cifar_config(56), settings, num_points=48, max_lag=4)
        residual = results["residual"].neighbour_correlation  # measured 0.75
        plain = results["plain"].neighbour_correlation  # measured 0.00
        assert residual > 0.5
        assert abs(plain) < 0.1


class TestFindings:
    """The sentences under each chart: which catalog key, filled with which measured value."""

    def test_deep_bn_twins(self):
        config = cifar_config(56)
        results = compare(config, ProbeSettings(batch_size=8, data="noise"))
        findings = layer_findings(config, results)
        assert [f.key for f in findings] == ["grad.find_layers_steady", "grad.find_layers_grows", "grad.note_bn"]
        assert findings[1].params["ratio"] == pytest.approx(results["plain"][0].first_last_ratio)
        assert findings[2].params["depth"] == 56

    def test_zero_gamma_note_counts_the_zeroed_branches(self):
        config = cifar_config(8, init="zero_gamma")
        results = compare(config, ProbeSettings(batch_size=8, data="noise", steps=1))
        at_start = layer_findings(config, results, step=0)[-1]
        after_one = layer_findings(config, results, step=1)[-1]
        assert at_start.key == "grad.note_zero_gamma"
        assert at_start.params["zero"] == at_start.params["total"] == 6
        assert after_one.params["zero"] == 0
        signal = signal_findings(config, results)
        assert signal[1].key == "grad.find_signal_dead"  # the plain twin

    def test_exploding_residual_without_bn(self):
        config = cifar_config(56, batch_norm=False)
        settings = ProbeSettings(batch_size=8, data="noise", steps=2)
        results = compare(config, settings)
        keys = [f.key for f in layer_findings(config, results)]
        assert keys == ["grad.find_layers_steady", "grad.find_loss_explodes", "grad.find_layers_steady",
                        "grad.note_he_no_bn"]
        assert layer_findings(config, results, step=1)[0].key == "grad.find_diverged"
        assert step_findings(results, settings)[0].key == "grad.find_steps_diverged"
        assert step_findings(results, settings)[1].key == "grad.find_steps"

    def test_plain_default_init_regime(self):
        config = cifar_config(56, batch_norm=False, init="default")
        results = compare(config, ProbeSettings(batch_size=8, data="noise"))
        findings = layer_findings(config, results)
        assert findings[1].key == "grad.find_layers_zero_first"
        assert findings[-1].key == "grad.note_default_init"
        assert findings[-1].params["plain_first"] == 0.0
