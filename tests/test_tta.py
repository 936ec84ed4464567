"""core/tta.py: view geometry, one-batch inference, merging, comparison and evaluation."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from core import tta
from core.data import Preprocessing, imagenet_preprocessing, sample_photos
from core.errors import LabError
from core.images import decode_image
from core.models import build_resnet, cifar_config

PREPROCESSINGS = {
    "imagenet": imagenet_preprocessing(),  # shorter side 256, centre crop 224
    "resize_crop_no_margin": Preprocessing(input_size=64, resize="resize_crop"),
    "stretch": Preprocessing(input_size=32, resize="stretch", mean=(0.5,) * 3, std=(0.25,) * 3),
    "letterbox": Preprocessing(input_size=20, resize="letterbox", mean=(0.4, 0.5, 0.6), std=(0.2,) * 3),
    "tiny_gray": Preprocessing(input_size=8, resize="stretch", channels=1, mean=(0.5,), std=(0.5,)),
}
SMALL = PREPROCESSINGS["stretch"]
ALL_VIEWS = tta.expand_views(tta.VIEW_FAMILIES)


def noise_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


def gradient_image(height: int, width: int) -> Image.Image:
    """Smooth and asymmetric, so flips, crops and zooms all give different pixels."""
    rows = np.linspace(0, 255, height)[:, None]
    cols = np.linspace(0, 255, width)[None, :]
    red = np.broadcast_to(rows, (height, width))
    green = np.broadcast_to(cols, (height, width))
    blue = (rows * cols / 255.0) % 256
    return Image.fromarray(np.stack([red, green, np.broadcast_to(blue, (height, width))], axis=-1).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    """A CIFAR ResNet-8 with 4 base channels, 5 classes, and non-trivial BatchNorm statistics."""
    model = build_resnet(cifar_config(8, base_width=4, num_classes=5, init="default"), seed=0)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    model.train()  # forward_views must switch it to eval itself
    return model


class TestViewList:
    def test_order_ignores_selection_order(self):
        shuffled = tta.expand_views(["rotations", "hflip", "identity"])
        assert shuffled == tta.expand_views(["identity", "hflip", "rotations"])

    def test_all_views_count(self):
        # 1 identity + 1 hflip + 1 vflip + 10 crops (five-crop inside ten-crop) + 4 scales + 4 rotations
        assert len(ALL_VIEWS) == 21

    def test_five_and_ten_crop_share_views(self):
        names = [view.name for view in tta.expand_views(["five_crop", "ten_crop"])]
        assert names == [view.name for view in tta.expand_views(["ten_crop"])]

    def test_ten_crop_follows_torchvision_order(self):
        names = [view.name for view in tta.expand_views(["ten_crop"])]
        assert names == ["crop_tl", "crop_tr", "crop_bl", "crop_br", "crop_c",
                         "crop_tl_hflip", "crop_tr_hflip", "crop_bl_hflip", "crop_br_hflip", "crop_c_hflip"]

    def test_unknown_family_rejected(self):
        with pytest.raises(LabError) as info:
            tta.expand_views(["identity", "sharpen"])
        assert info.value.key == "tta.err_unknown_family"

    def test_batch_views_put_identity_first(self):
        assert tta.batch_views(["hflip"])[0].name == "identity"


class TestViewSizes:
    @pytest.mark.parametrize("pre_name", sorted(PREPROCESSINGS))
    @pytest.mark.parametrize("height,width", [(1, 1), (1, 700), (700, 1), (3, 5), (37, 91), (91, 37), (2, 3000)])
    def test_exact_output_size(self, pre_name, height, width):
        pre = PREPROCESSINGS[pre_name]
        views = tta.make_views(noise_image(height, width), pre, ALL_VIEWS)
        assert tuple(views.shape) == (len(ALL_VIEWS), pre.channels, pre.input_size, pre.input_size)

    def test_huge_image(self):
        views = tta.make_views(gradient_image(3000, 4000), PREPROCESSINGS["imagenet"], ALL_VIEWS)
        assert tuple(views.shape) == (21, 3, 224, 224)

    def test_finite_values(self):
        views = tta.make_views(noise_image(37, 91), PREPROCESSINGS["imagenet"], ALL_VIEWS)
        assert torch.isfinite(views).all()

    def test_deterministic(self):
        image = noise_image(50, 70)
        first = tta.make_views(image, PREPROCESSINGS["imagenet"], ALL_VIEWS)
        second = tta.make_views(image, PREPROCESSINGS["imagenet"], ALL_VIEWS)
        assert torch.equal(first, second)

    def test_only_centre_crops_repeat(self):
        # With ImageNet's Resize(256) the crop canvas is the identity's frame, so the centre crop is
        # the identity view and its mirror the hflip view, as in torchvision's FiveCrop/TenCrop.
        views = tta.make_views(gradient_image(120, 180), PREPROCESSINGS["imagenet"], ALL_VIEWS)
        names = [view.name for view in ALL_VIEWS]
        flat = views.flatten(1)
        close = torch.cdist(flat, flat) < 1.0
        pairs = {(names[i], names[j]) for i, j in close.nonzero().tolist() if i < j}
        assert pairs == {("identity", "crop_c"), ("hflip", "crop_c_hflip")}

    def test_views_distinct_when_stretching(self):
        views = tta.make_views(gradient_image(120, 180), SMALL, ALL_VIEWS)
        flat = views.flatten(1)
        distances = torch.cdist(flat, flat) + torch.eye(len(ALL_VIEWS)) * 1e9
        assert distances.min() > 0.1

    def test_extreme_aspect_is_limited(self):
        assert tta.limit_aspect(noise_image(10, 1000)).size == (160, 10)

    def test_usual_aspect_untouched(self):
        image = noise_image(300, 451)
        assert tta.limit_aspect(image) is image


class TestViewContent:
    @pytest.mark.parametrize("pre_name", sorted(PREPROCESSINGS))
    def test_identity_is_the_preprocessing(self, pre_name):
        image = gradient_image(300, 451)
        pre = PREPROCESSINGS[pre_name]
        assert torch.equal(tta.model_input(image, pre), pre(image))

    def test_flips_mirror_the_identity(self):
        image = gradient_image(60, 80)
        views = tta.make_views(image, PREPROCESSINGS["imagenet"], tta.expand_views(["identity", "hflip", "vflip"]))
        assert torch.equal(views[1], views[0].flip(-1))
        assert torch.equal(views[2], views[0].flip(-2))

    def test_ten_crop_mirrors_five_crop(self):
        views = tta.make_views(gradient_image(60, 80), PREPROCESSINGS["imagenet"], tta.expand_views(["ten_crop"]))
        assert torch.equal(views[5:], views[:5].flip(-1))

    def test_corner_crops_cut_the_256_canvas(self):
        image = gradient_image(300, 400)
        pre = PREPROCESSINGS["imagenet"]
        resized = np.asarray(image.resize((341, 256), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        canvas = pre.normalize(torch.from_numpy(resized.transpose(2, 0, 1).copy()))  # (3, 256, 341)
        views = tta.make_views(image, pre, tta.expand_views(["five_crop"]))
        assert torch.allclose(views[0], canvas[:, :224, :224], atol=1e-6)  # top left
        assert torch.allclose(views[3], canvas[:, -224:, -224:], atol=1e-6)  # bottom right

    def test_zoom_out_pads_with_mean_colour(self):
        zoom_out = [tta.View("scale_0.8", "scale", scale=0.8)]
        views = tta.make_views(gradient_image(100, 100), PREPROCESSINGS["imagenet"], zoom_out)
        # 0.8 × 256 = 205 pixels of image inside 224: 9 columns of padding on the left, 0 after normalising.
        assert torch.equal(views[0, :, :, :9], torch.zeros(3, 224, 9))

    def test_rotation_keeps_the_centre(self):
        image = gradient_image(101, 101)
        views = tta.make_views(image, SMALL, tta.expand_views(["identity", "rotations"]))
        centre = (slice(None), slice(15, 17), slice(15, 17))
        assert torch.allclose(views[1][centre], views[0][centre], atol=0.05)

    def test_display_round_trip(self):
        image = gradient_image(32, 32)
        displayed = tta.to_display(tta.model_input(image, SMALL), SMALL)
        assert np.array_equal(displayed, np.asarray(image))

    def test_view_labels_in_both_languages(self):
        from core.i18n import load_catalog

        for lang in ("es", "en"):
            catalog = load_catalog(lang)
            missing = [view.label_key for view in ALL_VIEWS if view.label_key not in catalog]
            assert missing == [], lang


class TestMerge:
    # Two views, three classes: softmax rows are (1/5, 3/5, 1/5) and (1/3, 1/3, 1/3).
    LOGITS = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)

    def test_mean_of_probabilities(self):
        expected = torch.tensor([4 / 15, 7 / 15, 4 / 15], dtype=torch.float64)
        assert torch.allclose(tta.merge(self.LOGITS, "mean_prob"), expected, atol=1e-12)

    def test_mean_of_logits(self):
        root3 = math.sqrt(3.0)
        expected = torch.tensor([1.0, root3, 1.0], dtype=torch.float64) / (2.0 + root3)
        assert torch.allclose(tta.merge(self.LOGITS, "mean_logit"), expected, atol=1e-12)

    def test_max(self):
        expected = torch.tensor([5 / 19, 9 / 19, 5 / 19], dtype=torch.float64)
        assert torch.allclose(tta.merge(self.LOGITS, "max"), expected, atol=1e-12)

    @pytest.mark.parametrize("mode", tta.MERGE_MODES)
    def test_single_view_is_its_softmax(self, mode):
        logits = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
        assert torch.allclose(tta.merge(logits, mode), logits[0].softmax(-1), atol=1e-7)

    def test_batched_leading_axes(self):
        logits = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(0))
        merged = tta.merge(logits, "mean_prob")
        assert torch.allclose(merged[2], tta.merge(logits[2], "mean_prob"))

    def test_unknown_mode_rejected(self):
        with pytest.raises(LabError) as info:
            tta.merge(self.LOGITS, "median")
        assert info.value.key == "tta.err_unknown_merge"


class TestPrediction:
    def test_identity_only_equals_plain_prediction(self, tiny_model):
        image = gradient_image(45, 61)
        plain_input = SMALL(image)
        tiny_model.eval()
        with torch.no_grad():
            plain = tiny_model(plain_input[None])[0].softmax(-1)
        for mode in tta.MERGE_MODES:
            prediction = tta.predict_tta(tiny_model, image, SMALL, ["identity"], mode)
            assert torch.allclose(prediction.merged, plain, atol=1e-6), mode

    @pytest.mark.parametrize("mode", tta.MERGE_MODES)
    def test_merged_equals_manual_computation(self, tiny_model, mode):
        image = gradient_image(45, 61)
        families = ["hflip", "five_crop", "rotations"]
        prediction = tta.predict_tta(tiny_model, image, SMALL, families, mode)
        views = tta.expand_views(families)
        tiny_model.eval()
        with torch.no_grad():
            probs = np.stack([
                tiny_model(tta.make_views(image, SMALL, [view]))[0].softmax(-1).double().numpy() for view in views
            ])  # (V, K), one forward pass per view
            logits = np.stack([tiny_model(tta.make_views(image, SMALL, [view]))[0].double().numpy() for view in views])
        if mode == "mean_prob":
            expected = probs.mean(axis=0)
        elif mode == "mean_logit":
            mean_logits = logits.mean(axis=0)
            expected = np.exp(mean_logits - mean_logits.max()) / np.exp(mean_logits - mean_logits.max()).sum()
        else:
            expected = probs.max(axis=0) / probs.max(axis=0).sum()
        assert np.allclose(prediction.merged.double().numpy(), expected, atol=1e-5)

    def test_identity_merged_only_when_selected(self, tiny_model):
        image = gradient_image(30, 30)
        without = tta.predict_tta(tiny_model, image, SMALL, ["hflip"])
        with_identity = tta.predict_tta(tiny_model, image, SMALL, ["identity", "hflip"])
        assert without.merged_views == [1]
        assert with_identity.merged_views == [0, 1]

    def test_no_views_rejected(self, tiny_model):
        with pytest.raises(LabError) as info:
            tta.predict_tta(tiny_model, gradient_image(30, 30), SMALL, [])
        assert info.value.key == "tta.err_no_views"


class TestBatchIndependence:
    """One view's logits depend on that view only: not on the other views or images in the batch."""

    TOLERANCE = 1e-5

    def test_eval_mode_forced(self, tiny_model):
        tiny_model.train()
        tta.forward_views(tiny_model, tta.make_views(gradient_image(20, 20), SMALL, ALL_VIEWS[:1]))
        assert not tiny_model.training

    def test_alone_vs_with_other_images(self, tiny_model):
        views = tta.expand_views(["identity", "hflip", "scales"])
        first = tta.make_views(gradient_image(40, 55), SMALL, views)
        others = torch.cat([tta.make_views(noise_image(70, 33, seed), SMALL, views) for seed in range(3)])
        alone = tta.forward_views(tiny_model, first)
        together = tta.forward_views(tiny_model, torch.cat([others[:7], first, others[7:]]))
        assert torch.allclose(together[7:7 + len(views)], alone, atol=self.TOLERANCE)

    def test_same_view_in_different_view_sets(self, tiny_model):
        image = gradient_image(48, 64)
        small_set = tta.predict_tta(tiny_model, image, SMALL, ["hflip"])
        large_set = tta.predict_tta(tiny_model, image, SMALL, list(tta.VIEW_FAMILIES))
        large_names = [view.name for view in large_set.views]
        for index, view in enumerate(small_set.views):
            other = large_set.logits[large_names.index(view.name)]
            assert torch.allclose(small_set.logits[index], other, atol=self.TOLERANCE), view.name

    def test_single_view_batch_matches_full_batch(self, tiny_model):
        image = noise_image(33, 47, seed=5)
        batch = tta.make_views(image, SMALL, ALL_VIEWS)
        together = tta.forward_views(tiny_model, batch)
        one_by_one = torch.cat([tta.forward_views(tiny_model, batch[i:i + 1]) for i in range(len(ALL_VIEWS))])
        assert torch.allclose(together, one_by_one, atol=self.TOLERANCE)


class TestComparison:
    def make_prediction(self) -> tta.TTAPrediction:
        views = tta.batch_views(["identity", "hflip", "vflip"])
        logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]])
        return tta.combine(views, torch.zeros(3, 3, 4, 4), logits, ["identity", "hflip", "vflip"], "mean_prob")

    def test_tops_and_agreement(self):
        comparison = tta.compare_to_identity(self.make_prediction())
        assert comparison.reference_top == 0
        assert comparison.merged_top == 1
        assert comparison.agreement == pytest.approx(2 / 3)

    def test_gains_and_losses_balance(self):
        prediction = self.make_prediction()
        comparison = tta.compare_to_identity(prediction, k=3)
        assert [cls for cls, _ in comparison.gained] == [1]
        assert comparison.lost[0][0] == 0
        total = sum(change for _, change in comparison.gained + comparison.lost)
        assert total == pytest.approx(0.0, abs=1e-6)

    def test_confidences(self):
        prediction = self.make_prediction()
        comparison = tta.compare_to_identity(prediction)
        assert comparison.reference_confidence == pytest.approx(math.exp(2) / (math.exp(2) + 2))
        assert comparison.merged_confidence == pytest.approx(float(prediction.merged.max()))


class TestEvaluation:
    def test_accuracies_match_per_view_argmax(self, tiny_model):
        images = [noise_image(30 + 3 * i, 40 - 2 * i, seed=i) for i in range(6)]
        families = ["hflip", "five_crop"]
        views = tta.expand_views(["identity", *families])
        per_image = [tta.forward_views(tiny_model, tta.make_views(image, SMALL, views)) for image in images]
        labels = [int(logits[0].argmax()) for logits in per_image]  # the identity view is always right
        report = tta.evaluate(tiny_model, zip(images, labels, strict=True), SMALL, families)

        assert report.baseline == 1.0
        assert report.set_accuracy["identity"]["mean_prob"] == 1.0
        for index, view in enumerate(views):
            hits = [int(logits[index].argmax()) == label for logits, label in zip(per_image, labels, strict=True)]
            expected = np.mean(hits)
            assert report.single_view_accuracy[view.name] == pytest.approx(expected), view.name
        merged = [int(tta.merge(logits[:2], "mean_logit").argmax()) for logits in per_image]
        assert report.set_accuracy["hflip"]["mean_logit"] == pytest.approx(np.mean(np.array(merged) == labels))

    def test_view_sets(self):
        sets = tta.view_sets(["hflip", "scales"])
        assert list(sets) == ["identity", "hflip", "scales", "all"]
        assert sets["hflip"] == ["identity", "hflip"]
        assert len(sets["all"]) == 6

    def test_progress_reported(self, tiny_model):
        seen = []
        tta.evaluate(tiny_model, [(gradient_image(20, 20), 0)] * 3, SMALL, ["hflip"], progress=seen.append)
        assert seen == [1, 2, 3]

    def test_empty_set_rejected(self, tiny_model):
        with pytest.raises(LabError) as info:
            tta.evaluate(tiny_model, [], SMALL, ["hflip"])
        assert info.value.key == "tta.err_empty_eval"


class TestSamplePhotos:
    EXPECTED_SIZES = {"chelsea": (451, 300), "coffee": (600, 400), "astronaut": (512, 512), "rocket": (640, 427)}

    @pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
    def test_decodes_through_the_shared_decoder(self, name):
        photo = {photo.name: photo for photo in sample_photos()}[name]
        assert decode_image(photo.data, photo.file_name).size == self.EXPECTED_SIZES[name]

    @pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
    def test_views_of_a_sample_photo(self, name, tiny_model):
        photo = {photo.name: photo for photo in sample_photos()}[name]
        prediction = tta.predict_tta(tiny_model, decode_image(photo.data, photo.file_name).image, SMALL, ["ten_crop"])
        assert tuple(prediction.logits.shape) == (11, 5)


class TestModelBundles:
    def test_imagenet_from_the_cache(self, tmp_path, monkeypatch):
        """With the weight file in the torch cache, the categories and recipe come from the weights' meta."""
        from core import weights
        from core.models import imagenet_config

        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        name = weights.DEFAULT_IMAGENET_WEIGHTS[18]
        reference = build_resnet(imagenet_config(18), seed=0)
        weights.weights_path(name).parent.mkdir(parents=True)
        torch.save(reference.state_dict(), weights.weights_path(name))

        bundle = tta.bundle_from_imagenet(name)
        assert bundle.class_names[281] == "tabby"
        assert (bundle.preprocessing.resize_size, bundle.preprocessing.input_size) == (256, 224)
        assert torch.equal(bundle.model.fc.weight, reference.fc.weight)
        assert not bundle.model.training

    def test_imagenet_offline_names_the_file(self, tmp_path, monkeypatch):
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        with pytest.raises(LabError) as info:
            tta.bundle_from_imagenet("ResNet50_Weights.IMAGENET1K_V2")
        assert info.value.key == "data.err_weights_offline"
        assert info.value.params["file"] == "resnet50-11ad3fa6.pth"

    def test_checkpoint_architecture_inferred(self, tiny_model):
        from safetensors.torch import save

        data = save({key: value.contiguous() for key, value in tiny_model.state_dict().items()})
        bundle = tta.bundle_from_checkpoint(data, "tiny.safetensors", input_size=24, normalization="half")
        assert bundle.config.stage_blocks == (1, 1, 1)
        assert bundle.config.num_classes == 5
        assert bundle.class_names == ["0", "1", "2", "3", "4"]
        assert bundle.preprocessing.input_size == 24
        assert bundle.preprocessing.mean == (0.5, 0.5, 0.5)
        assert ("tta.note_skip_ambiguous", {}) in bundle.notes  # zero-padding shortcuts look like a plain net

    def test_checkpoint_matches_source_model(self, tiny_model):
        from safetensors.torch import save

        data = save({key: value.contiguous() for key, value in tiny_model.state_dict().items()})
        bundle = tta.bundle_from_checkpoint(data, "tiny.safetensors", input_size=32, normalization="half")
        image = gradient_image(40, 40)
        ours = tta.predict_tta(bundle.model, image, bundle.preprocessing, ["identity"]).logits
        theirs = tta.predict_tta(tiny_model, image, bundle.preprocessing, ["identity"]).logits
        assert torch.allclose(ours, theirs, atol=1e-6)

    def test_imagenet_stem_gets_imagenet_recipe(self):
        from core.models import imagenet_config

        config = imagenet_config(18, num_classes=3)
        pre = tta.checkpoint_preprocessing(config)
        assert (pre.resize, pre.resize_size, pre.input_size) == ("resize_crop", 256, 224)

    def test_class_count_must_match_the_head(self, tiny_model):
        with pytest.raises(LabError) as info:
            tta.ModelBundle(tiny_model, ["a", "b"], SMALL, cifar_config(8, base_width=4, num_classes=5), "run", "x")
        assert info.value.key == "tta.err_class_count"


class TestLabelledSets:
    def test_match_exact_then_casefold(self):
        mapping, unknown = tta.match_classes(["Tabby", "goldfish", "gato"], ["goldfish", "tabby", "Goldfish"])
        assert mapping == {"Tabby": 1, "goldfish": 0}
        assert unknown == ["gato"]

    def test_pick_evenly_takes_classes_in_turn(self):
        labels = [0] * 10 + [1] * 2 + [2] * 5
        chosen = tta.pick_evenly(labels, 7)
        counts = np.bincount([labels[i] for i in chosen], minlength=3)
        assert counts.tolist() == [3, 2, 2]

    def test_pick_evenly_is_seeded(self):
        labels = [0, 1] * 20
        assert tta.pick_evenly(labels, 9, seed=1) == tta.pick_evenly(labels, 9, seed=1)

    def test_pick_evenly_caps_at_set_size(self):
        assert tta.pick_evenly([0, 1, 1], 10) == [0, 1, 2]


class TestPageCatalog:
    """The page builds some catalog keys from option values; each must exist in both languages."""

    @pytest.mark.parametrize("lang", ["es", "en"])
    def test_option_keys_exist(self, lang):
        from core.data import RESIZE_POLICIES, SAMPLE_PHOTO_FILES
        from core.i18n import load_catalog

        catalog = load_catalog(lang)
        keys = [f"tta.family_{family}" for family in tta.VIEW_FAMILIES]
        keys += [f"tta.merge_{mode}" for mode in tta.MERGE_MODES]
        keys += [f"tta.pos_{position}" for position in tta.CROP_POSITIONS]
        keys += [f"tta.resize_{policy}" for policy in RESIZE_POLICIES]
        keys += [f"tta.sample_{name}" for name in SAMPLE_PHOTO_FILES]
        keys += [f"tta.model_src_{source}" for source in ("run", "imagenet", "checkpoint")]
        keys += [f"tta.src_{source}" for source in ("sample", "upload", "camera")]
        keys += [f"tta.waiting_{source}" for source in ("sample", "upload", "camera")]
        keys += [f"tta.eval_src_{source}" for source in ("run_val", "zip")]
        keys += [f"tta.normalization_{name}" for name in ("imagenet", "half")]
        assert [key for key in keys if key not in catalog] == []


class TestSharedModelUntouched:
    """The page shares one model between sessions, so TTA must leave every tensor as it found it."""

    def test_predict_and_evaluate_leave_model_unchanged(self, tiny_model):
        tiny_model.eval()
        before = {name: tensor.clone() for name, tensor in tiny_model.state_dict().items()}
        grads_before = {name: p.requires_grad for name, p in tiny_model.named_parameters()}
        families = list(tta.VIEW_FAMILIES)
        for mode in tta.MERGE_MODES:
            tta.predict_tta(tiny_model, noise_image(41, 29), SMALL, families, merge_mode=mode)
        tta.evaluate(tiny_model, [(gradient_image(30, 30), 1), (noise_image(25, 40, 3), 2)], SMALL, families)
        after = tiny_model.state_dict()
        assert sorted(after) == sorted(before)
        for name, tensor in before.items():
            assert torch.equal(after[name], tensor), name
        assert {name: p.requires_grad for name, p in tiny_model.named_parameters()} == grads_before
        assert all(p.grad is None for p in tiny_model.parameters())
        assert not tiny_model.training
