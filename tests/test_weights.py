"""ImageNet weights from a temporary torch cache, safe checkpoint reading, loading and inference."""

import io
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save as save_safetensors

from core.errors import LabError
from core.models import ResNetConfig, build_resnet, cifar_config, imagenet_config
from core.weights import (
    check_fits,
    download_file,
    infer_config_from_state_dict,
    is_cached,
    load_imagenet_state_dict,
    load_into_model,
    load_weights_spec,
    read_checkpoint,
    save_uploaded_checkpoint,
    skip_is_ambiguous,
    strip_wrapper_prefixes,
    weights_categories,
    weights_file_name,
    weights_path,
    weights_preprocessing,
)

RESNET18 = "ResNet18_Weights.IMAGENET1K_V1"


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def small_config(**changes) -> ResNetConfig:
    return cifar_config(8, base_width=4, **changes)  # one BasicBlock per stage, widths 4/8/16


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


class MarkerPayload:
    """Unpickling this would create the marker file: the test checks it never exists."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class TestImagenetWeights:
    def test_file_name_and_folder_follow_torch_home(self, torch_home):
        assert weights_file_name(RESNET18) == "resnet18-f37072fd.pth"
        assert weights_path(RESNET18) == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"

    def test_offline_message_names_file_and_folder(self, torch_home):
        with pytest.raises(LabError) as info:
            load_imagenet_state_dict(RESNET18, allow_download=False)
        assert info.value.key == "data.err_weights_offline"
        assert info.value.params["file"] == "resnet18-f37072fd.pth"
        assert info.value.params["folder"] == str(torch_home / "hub" / "checkpoints")
        assert "resnet18-f37072fd.pth" in str(info.value)

    def test_failed_download_gives_offline_message(self, torch_home, monkeypatch):
        import urllib.error

        import core.weights as weights_module

        def no_network(*args, **kwargs):
            raise urllib.error.URLError("no network in tests")

        monkeypatch.setattr(weights_module.urllib.request, "urlopen", no_network)
        with pytest.raises(LabError) as info:
            load_imagenet_state_dict(RESNET18, allow_download=True)
        assert info.value.key == "data.err_weights_offline"
        assert not list((torch_home / "hub" / "checkpoints").glob("*"))  # no partial file left

    def test_cached_file_loads_into_the_lab_model(self, torch_home):
        reference = torchvision.models.resnet18()
        path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
        path.parent.mkdir(parents=True)
        torch.save(reference.state_dict(), path)
        assert is_cached(RESNET18)

        model = build_resnet(imagenet_config(18, num_classes=5))
        report = load_weights_spec({"kind": "imagenet", "weights": RESNET18}, model)
        assert [h.key for h in report.replaced_head] == ["fc.weight", "fc.bias"]
        assert report.replaced_head[0].checkpoint_shape == (1000, 512)
        assert report.replaced_head[0].model_shape == (5, 512)
        assert report.loaded == len(reference.state_dict()) - 2
        torch.testing.assert_close(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
        torch.testing.assert_close(model.bn1.running_var, reference.bn1.running_var)

    def test_metadata_from_torchvision(self):
        assert len(weights_categories(RESNET18)) == 1000
        prep = weights_preprocessing("ResNet50_Weights.IMAGENET1K_V2")
        assert (prep.input_size, prep.resize, prep.resize_size) == (224, "resize_crop", 232)
        assert prep.mean == (0.485, 0.456, 0.406)

    def test_unknown_weights_name(self):
        with pytest.raises(LabError) as info:
            weights_file_name("VGG16_Weights.IMAGENET1K_V1")
        assert info.value.key == "data.err_weights_name"


class TestDownload:
    def test_file_url_with_progress_and_hash_check(self, tmp_path):
        payload = b"weights" * 1000
        import hashlib

        prefix = hashlib.sha256(payload).hexdigest()[:8]
        source = tmp_path / "src.bin"
        source.write_bytes(payload)
        calls = []
        destination = tmp_path / "cache" / f"net-{prefix}.pth"
        download_file(source.as_uri(), destination, progress=lambda done, total: calls.append((done, total)))
        assert destination.read_bytes() == payload
        assert calls[-1][0] == len(payload)

    def test_hash_mismatch_deletes_download(self, tmp_path):
        source = tmp_path / "src.bin"
        source.write_bytes(b"not the weights")
        destination = tmp_path / "cache" / "net-00000000.pth"
        with pytest.raises(LabError) as info:
            download_file(source.as_uri(), destination)
        assert info.value.key == "data.err_weights_hash"
        assert list(destination.parent.iterdir()) == []


class TestReadCheckpoint:
    def test_torch_state_dict(self):
        state = build_resnet(small_config(), seed=0).state_dict()
        loaded = read_checkpoint(torch_bytes(state), "m.pth")
        assert loaded.keys() == state.keys()
        torch.testing.assert_close(loaded["fc.weight"], state["fc.weight"])

    def test_safetensors(self):
        state = {k: v.contiguous() for k, v in build_resnet(small_config(), seed=0).state_dict().items()}
        loaded = read_checkpoint(save_safetensors(state), "m.safetensors")
        torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"])

    def test_damaged_safetensors(self):
        data = save_safetensors({"w": torch.ones(4)})
        with pytest.raises(LabError) as info:
            read_checkpoint(data[:-8], "cut.safetensors")
        assert info.value.key == "data.err_checkpoint_corrupt"

    def test_nested_state_dict_key(self):
        state = build_resnet(small_config(), seed=0).state_dict()
        loaded = read_checkpoint(torch_bytes({"epoch": 3, "state_dict": state}), "lightning.ckpt")
        assert loaded.keys() == state.keys()

    def test_hostile_torch_checkpoint_is_rejected_without_running(self, tmp_path):
        marker = tmp_path / "pwned"
        data = torch_bytes({"state_dict": {"w": torch.zeros(1)}, "payload": MarkerPayload(marker)})
        assert not marker.exists()
        with pytest.raises(LabError) as info:
            read_checkpoint(data, "evil.pth")
        assert info.value.key == "data.err_checkpoint_unsafe"
        assert not marker.exists()

    def test_hostile_raw_pickle_is_rejected_without_running(self, tmp_path):
        marker = tmp_path / "pwned"
        data = pickle.dumps(MarkerPayload(marker), protocol=2)
        with pytest.raises(LabError) as info:
            read_checkpoint(data, "evil.pkl")
        assert info.value.key in ("data.err_checkpoint_unsafe", "data.err_checkpoint_corrupt")
        assert not marker.exists()

    def test_hostile_upload_is_never_stored(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path / "data"))
        marker = tmp_path / "pwned"
        with pytest.raises(LabError):
            save_uploaded_checkpoint(torch_bytes(MarkerPayload(marker)), "evil.pth")
        assert not marker.exists()
        assert not (tmp_path / "data" / "checkpoints").exists()

    def test_whole_module_pickle_is_rejected(self):
        with pytest.raises(LabError) as info:
            read_checkpoint(torch_bytes(build_resnet(small_config())), "model.pth")
        assert info.value.key == "data.err_checkpoint_unsafe"

    @pytest.mark.parametrize("data, key", [
        (b"", "data.err_checkpoint_empty"),
        (b"hello, these are not weights", "data.err_checkpoint_format"),
        (b"PK\x03\x04" + b"\x00" * 100, "data.err_checkpoint_corrupt"),
    ])
    def test_bad_files(self, data, key):
        with pytest.raises(LabError) as info:
            read_checkpoint(data, "x.pth")
        assert info.value.key == key

    def test_no_tensors(self):
        with pytest.raises(LabError) as info:
            read_checkpoint(torch_bytes({"epoch": 1, "lr": 0.1}), "x.pth")
        assert info.value.key == "data.err_checkpoint_no_state_dict"

    def test_saved_upload_loads_back(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path))
        source = build_resnet(small_config(num_classes=3), seed=1)
        path = save_uploaded_checkpoint(torch_bytes(source.state_dict()), "mine.pth")
        model = build_resnet(small_config(num_classes=3), seed=2)
        report = load_weights_spec({"kind": "upload", "path": str(path), "name": "mine.pth"}, model)
        assert report.replaced_head == []
        torch.testing.assert_close(model.fc.weight, source.fc.weight)


class TestLoadIntoModel:
    def test_prefixes_are_stripped(self):
        state = build_resnet(small_config(), seed=0).state_dict()
        wrapped = {f"_orig_mod.module.{k}": v for k, v in state.items()}
        stripped, removed = strip_wrapper_prefixes(wrapped)
        assert removed == ["_orig_mod.", "module."]
        assert stripped.keys() == state.keys()

    def test_partial_prefix_is_kept(self):
        stripped, removed = strip_wrapper_prefixes({"module.a": torch.zeros(1), "b": torch.zeros(1)})
        assert removed == []
        assert set(stripped) == {"module.a", "b"}

    def test_data_parallel_checkpoint_loads(self):
        source = build_resnet(small_config(), seed=0)
        model = build_resnet(small_config(), seed=1)
        report = load_into_model(model, {f"module.{k}": v for k, v in source.state_dict().items()})
        assert report.stripped_prefixes == ["module."]
        torch.testing.assert_close(model.layer3[0].conv1.weight, source.layer3[0].conv1.weight)

    def test_missing_num_batches_tracked_is_fine(self):
        state = {k: v for k, v in build_resnet(small_config(), seed=0).state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        assert load_into_model(build_resnet(small_config()), state).replaced_head == []

    def test_checkpoint_without_head(self):
        state = {k: v for k, v in build_resnet(small_config(), seed=0).state_dict().items() if not k.startswith("fc.")}
        report = load_into_model(build_resnet(small_config()), state)
        assert [(h.key, h.checkpoint_shape) for h in report.replaced_head] == [("fc.weight", None), ("fc.bias", None)]

    def test_backbone_mismatch_names_keys_and_leaves_model_untouched(self):
        source = build_resnet(cifar_config(14, base_width=4), seed=0)  # two blocks per stage
        model = build_resnet(small_config(), seed=1)
        before = model.conv1.weight.clone()
        with pytest.raises(LabError) as info:
            load_into_model(model, source.state_dict(), "deeper.pth")
        assert info.value.key == "data.err_checkpoint_mismatch"
        assert "layer1.1.conv1.weight" in info.value.params["unexpected"]
        torch.testing.assert_close(model.conv1.weight, before)

    def test_check_fits_matches_loading(self):
        source = build_resnet(small_config(num_classes=10), seed=0).state_dict()
        report = check_fits(small_config(num_classes=3), source, "ten.pth")
        assert [(h.key, h.checkpoint_shape, h.model_shape) for h in report.replaced_head] == [
            ("fc.weight", (10, 16), (3, 16)), ("fc.bias", (10,), (3,))]
        with pytest.raises(LabError):
            check_fits(cifar_config(14, base_width=4), source)

    def test_width_mismatch_lists_shapes(self):
        source = build_resnet(cifar_config(8, base_width=8), seed=0)
        with pytest.raises(LabError) as info:
            load_into_model(build_resnet(small_config()), source.state_dict())
        assert "conv1.weight (8, 3, 3, 3)→(4, 3, 3, 3)" in info.value.params["shapes"]


class TestInferConfig:
    @pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
    def test_torchvision_imagenet_models(self, depth):
        with torch.device("meta"):
            state = getattr(torchvision.models, f"resnet{depth}")(num_classes=37).state_dict()
        assert infer_config_from_state_dict(state) == imagenet_config(depth, num_classes=37)

    @pytest.mark.parametrize("config", [
        cifar_config(20),
        cifar_config(29, block="bottleneck"),
        cifar_config(20, shortcut="projection", num_classes=4),
        small_config(in_channels=1),
        small_config(batch_norm=False),
        small_config(init="fixup"),
        imagenet_config(18, stage_blocks=(1, 1), base_width=8, num_classes=2),
    ])
    def test_lab_models(self, config):
        with torch.device("meta"):
            state = build_resnet(config).state_dict()
        inferred = infer_config_from_state_dict(state)
        expected_init = "fixup" if config.init == "fixup" else "he"
        assert inferred == config.replace(init=expected_init)

    def test_compiled_prefix(self):
        with torch.device("meta"):
            state = {f"_orig_mod.{k}": v for k, v in build_resnet(small_config()).state_dict().items()}
        assert infer_config_from_state_dict(state) == small_config(init="he")

    def test_plain_twin_is_ambiguous(self):
        with torch.device("meta"):
            state = build_resnet(small_config(skip=False)).state_dict()
        inferred = infer_config_from_state_dict(state)
        assert inferred.shortcut == "zero_pad"
        assert skip_is_ambiguous(inferred)
        assert not skip_is_ambiguous(imagenet_config(50))

    @pytest.mark.parametrize("mutate, reason_part", [
        (lambda sd: sd.pop("fc.weight"), "fc.weight"),
        (lambda sd: sd.pop("layer2.0.conv1.weight"), "layer2.0.conv1.weight"),
        (lambda sd: sd.__setitem__("layer1.0.conv2.weight", torch.zeros(4, 4, 5, 5)), "layer1.0.conv2.weight"),
        (lambda sd: sd.__setitem__("layer5.0.conv1.weight", torch.zeros(1)), "layer5"),
        (lambda sd: sd.__setitem__("conv1.weight", torch.zeros(4, 3, 5, 5)), "conv1 kernel 5"),
    ])
    def test_not_a_resnet(self, mutate, reason_part):
        state = dict(build_resnet(small_config()).state_dict())
        mutate(state)
        with pytest.raises(LabError) as info:
            infer_config_from_state_dict(state)
        assert info.value.key == "data.err_not_resnet"
        assert reason_part in info.value.params["reason"]

    def test_vgg_is_not_a_resnet(self):
        with torch.device("meta"):
            state = torchvision.models.vgg11().state_dict()
        with pytest.raises(LabError) as info:
            infer_config_from_state_dict(state)
        assert info.value.key == "data.err_not_resnet"
