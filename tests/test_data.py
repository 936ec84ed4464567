"""Datasets, splits, preprocessing, safe zip extraction and messy folders."""

import io
import json
import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import data as data_module
from core.data import (
    DatasetSpec,
    ImageDataset,
    Preprocessing,
    ZipLimits,
    cap_per_class,
    extract_zip,
    fit_normalization,
    load_dataset,
    load_digits_arrays,
    natural_sort_key,
    sample_photos,
    scan_image_folder,
    stratified_split,
    tensor_dataset,
)
from core.errors import LabError
from core.images import decode_image


def png_bytes(color=(10, 20, 30), size=(6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG")
    return buffer.getvalue()


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_zip(entries: list[tuple[str, bytes]], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def skipped_reasons(skipped) -> dict[str, str]:
    return {s.path: s.reason for s in skipped}


class TestStratifiedSplit:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3])

    def test_counts_per_class(self):
        train, val = stratified_split(self.labels, 0.2, seed=0)
        # round(n·0.2), at least 1 and at most n−1 when n ≥ 2; a single sample stays in training.
        assert np.bincount(self.labels[val], minlength=4).tolist() == [2, 1, 1, 0]
        assert np.bincount(self.labels[train], minlength=4).tolist() == [8, 4, 1, 1]

    def test_partition(self):
        train, val = stratified_split(self.labels, 0.3, seed=1)
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(self.labels)))

    def test_same_seed_same_split(self):
        first = stratified_split(self.labels, 0.2, seed=7)
        second = stratified_split(self.labels, 0.2, seed=7)
        assert all(np.array_equal(a, b) for a, b in zip(first, second))

    def test_other_seed_other_split(self):
        labels = np.repeat(np.arange(3), 50)
        assert not np.array_equal(stratified_split(labels, 0.2, 0)[1], stratified_split(labels, 0.2, 1)[1])

    @pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
    def test_fraction_outside_open_interval(self, fraction):
        with pytest.raises(LabError):
            stratified_split(self.labels, fraction, 0)

    def test_cap_per_class(self):
        kept = cap_per_class(self.labels, 3, seed=0)
        assert np.bincount(self.labels[kept], minlength=4).tolist() == [3, 3, 2, 1]


class TestNaturalOrder:
    def test_numbers_sort_by_value(self):
        names = [str(n) for n in range(1, 13)]
        assert sorted(reversed(names), key=natural_sort_key) == names

    def test_mixed_names(self):
        names = ["class10", "Class2", "class1", "b", "a"]
        assert sorted(names, key=natural_sort_key) == ["a", "b", "class1", "Class2", "class10"]


class TestEmbedded:
    def test_digits_are_the_real_scans(self):
        from sklearn.datasets import load_digits

        reference = load_digits()
        classes, images, labels = load_digits_arrays()
        assert classes == [str(d) for d in range(10)]
        assert images.shape == (1797, 8, 8, 3)
        np.testing.assert_array_equal(labels, reference.target)
        # 0..16 ink levels scaled by 255/16 and rounded, the same value in all three channels
        expected = np.floor(reference.images * 255 / 16 + 0.5)
        for channel in range(3):
            np.testing.assert_array_equal(images[..., channel], expected)

    def test_digits_dataset(self):
        loaded = load_dataset({"source": "digits"})
        assert loaded.classes == [str(d) for d in range(10)]
        assert len(loaded.train) + len(loaded.val) == 1797
        assert loaded.split_kind == "stratified"

    def test_digits_split_counts(self):
        counts = load_dataset({"source": "digits", "val_fraction": 0.2, "seed": 0}).counts()
        # 178 zeros: round(35.6) = 36 go to validation.
        assert counts["val"][0] == 36
        assert sum(counts["train"]) + sum(counts["val"]) == 1797

    def test_class_subset_is_renumbered_in_spec_order(self):
        loaded = load_dataset({"source": "digits", "classes": ["9", "5"]})
        assert loaded.classes == ["9", "5"]
        assert loaded.class_to_idx == {"9": 0, "5": 1}
        assert set(np.unique(loaded.train.labels)) == {0, 1}
        # 180 nines and 182 fives in the full set
        assert sum(loaded.counts()["train"]) + sum(loaded.counts()["val"]) == 180 + 182

    def test_unknown_class(self):
        with pytest.raises(LabError) as info:
            load_dataset({"source": "digits", "classes": ["1", "x"]})
        assert info.value.key == "data.err_unknown_classes"

    def test_faces(self):
        loaded = load_dataset({"source": "faces"})
        assert loaded.classes == ["face", "no_face"]
        assert loaded.counts() == {"train": [80, 80], "val": [20, 20]}
        assert loaded.train.arrays.shape[1:] == (25, 25, 3)

    def test_textures(self):
        loaded = load_dataset({"source": "textures"})
        assert loaded.classes == ["brick", "grass", "gravel"]
        assert [a + b for a, b in zip(*loaded.counts().values())] == [64, 64, 64]

    def test_max_per_class(self):
        loaded = load_dataset({"source": "digits", "max_per_class": 10})
        assert loaded.counts() == {"train": [8] * 10, "val": [2] * 10}

    def test_sample_photos_decode(self):
        photos = {p.name: p for p in sample_photos()}
        assert {"chelsea", "coffee", "astronaut", "rocket"} <= set(photos)
        decoded = decode_image(photos["chelsea"].data, photos["chelsea"].file_name)
        assert decoded.size == (451, 300)


class TestPreprocessing:
    def test_round_trip_through_json(self):
        prep = Preprocessing(input_size=40, resize="letterbox", channels=1, mean=(0.4,), std=(0.2,))
        assert Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict()))) == prep

    def test_unknown_field(self):
        with pytest.raises(LabError) as info:
            Preprocessing.from_dict({"input_size": 32, "colour": "red"})
        assert info.value.key == "data.err_prep_unknown_fields"

    @pytest.mark.parametrize("changes, key", [
        ({"input_size": 4}, "data.err_prep_input_size"),
        ({"resize": "squash"}, "data.err_prep_choice"),
        ({"channels": 2}, "data.err_prep_choice"),
        ({"mean": (0.5,)}, "data.err_prep_stats"),
        ({"std": (0.5, 0.0, 0.5)}, "data.err_prep_std"),
        ({"resize": "resize_crop", "resize_size": 16}, "data.err_prep_resize_size"),
    ])
    def test_invalid(self, changes, key):
        with pytest.raises(LabError) as info:
            Preprocessing(**changes)
        assert info.value.key == key

    def test_normalised_values_exact(self):
        prep = Preprocessing(input_size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
        x = prep(Image.new("RGB", (8, 8), (255, 0, 51)))
        assert x.shape == (3, 8, 8)
        assert x[:, 0, 0].tolist() == pytest.approx([1.0, -1.0, 0.2])

    def test_stretch_changes_aspect(self):
        prep = Preprocessing(input_size=16, resize="stretch")
        assert prep.resize_image(Image.new("RGB", (100, 20))).size == (16, 16)

    def test_resize_crop_keeps_centre(self):
        # 60×20: left third red, middle blue, right green; the centre crop is all blue.
        image = Image.new("RGB", (60, 20), (0, 0, 255))
        image.paste((255, 0, 0), (0, 0, 20, 20))
        image.paste((0, 255, 0), (40, 0, 60, 20))
        prep = Preprocessing(input_size=10, resize="resize_crop", resize_size=10, interpolation="nearest")
        out = np.asarray(prep.resize_image(image))
        assert out.shape == (10, 10, 3)
        assert (out == [0, 0, 255]).all()

    def test_letterbox_pads_with_mean_colour(self):
        prep = Preprocessing(input_size=10, resize="letterbox", mean=(0.2, 0.4, 0.6), std=(1, 1, 1),
                             interpolation="nearest")
        out = np.asarray(prep.resize_image(Image.new("RGB", (20, 10), (255, 255, 255))))
        assert out[0, 0].tolist() == [51, 102, 153]  # padding row above the 10×5 image
        assert out[5, 5].tolist() == [255, 255, 255]
        assert prep(Image.new("RGB", (20, 10)))[:, 0, 0].tolist() == pytest.approx([0, 0, 0], abs=1e-6)

    def test_single_channel_uses_luma(self):
        prep = Preprocessing(input_size=8, channels=1, mean=(0.0,), std=(1.0,))
        x = prep.to_tensor(Image.new("RGB", (8, 8), (255, 0, 0)))
        assert x.shape == (1, 8, 8)
        assert float(x[0, 0, 0]) == pytest.approx(76 / 255)  # ITU-R 601: 0.299·255 = 76.2 -> 76

    def test_denormalize_inverts(self):
        prep = Preprocessing(input_size=8, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
        raw = prep.to_tensor(Image.new("RGB", (8, 8), (30, 60, 90)))
        torch.testing.assert_close(prep.denormalize(prep.normalize(raw)), raw)

    def test_fit_normalization_matches_numpy(self):
        loaded = load_dataset({"source": "textures"})
        prep = fit_normalization(loaded.train, Preprocessing(input_size=64))
        pixels = loaded.train.arrays.astype(np.float64) / 255.0  # 64 px already: resize is the identity
        assert prep.mean == pytest.approx(tuple(pixels.mean(axis=(0, 1, 2))), abs=1e-5)
        assert prep.std == pytest.approx(tuple(pixels.std(axis=(0, 1, 2))), abs=1e-5)

    def test_torch_datasets_agree(self):
        loaded = load_dataset({"source": "digits", "max_per_class": 3})
        prep = Preprocessing(input_size=32)
        preloaded = tensor_dataset(loaded.val, prep)
        lazy = ImageDataset(loaded.val, prep)
        assert len(preloaded) == len(lazy) == 10
        x, y = lazy[4]
        torch.testing.assert_close(preloaded[4][0], x)
        assert int(preloaded[4][1]) == y


class TestSpec:
    def test_round_trip(self):
        spec = DatasetSpec(source="digits", classes=("0", "1"), max_per_class=5, seed=3)
        assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec

    @pytest.mark.parametrize("fields, key", [
        ({"source": "mnist"}, "data.err_spec_source"),
        ({"val_fraction": 1.5}, "data.err_spec_val_fraction"),
        ({"source": "folder"}, "data.err_spec_path"),
        ({"max_per_class": 0}, "data.err_spec_max_per_class"),
        ({"classes": ("1", "1")}, "data.err_spec_duplicate_classes"),
    ])
    def test_invalid(self, fields, key):
        with pytest.raises(LabError) as info:
            DatasetSpec(**fields)
        assert info.value.key == key

    def test_summary_is_json(self):
        summary = load_dataset({"source": "faces"}).summary()
        assert json.loads(json.dumps(summary))["class_to_idx"] == {"face": 0, "no_face": 1}


class TestCifar10Offline:
    def test_not_cached_and_no_download(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path))
        with pytest.raises(LabError) as info:
            load_dataset({"source": "cifar10"})
        assert info.value.key == "data.err_cifar_missing"
        assert info.value.params["file"] == "cifar-10-python.tar.gz"
        assert info.value.params["folder"] == str(tmp_path / "cifar10")

    def test_download_fails_offline(self, tmp_path, monkeypatch):
        import urllib.error

        import torchvision.datasets.cifar as cifar

        def no_network(*args, **kwargs):
            raise urllib.error.URLError("no network in tests")

        monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path))
        monkeypatch.setattr(cifar, "download_and_extract_archive", no_network)
        with pytest.raises(LabError) as info:
            load_dataset({"source": "cifar10", "allow_download": True})
        assert info.value.key == "data.err_cifar_offline"
        assert str(tmp_path / "cifar10") in str(info.value)

    def test_cached_batches_are_read(self, tmp_path, monkeypatch):
        import pickle

        import torchvision.datasets.cifar as cifar

        folder = tmp_path / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
        for name in names:
            batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
            (folder / name).write_bytes(pickle.dumps(batch))
        label_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": label_names}))
        # The md5 sums of these small files cannot match the real ones, so the checks are bypassed.
        monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
        monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
        monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path))

        loaded = load_dataset({"source": "cifar10", "classes": ["cat", "dog"]})
        assert loaded.classes == ["cat", "dog"]
        assert loaded.split_kind == "official"
        assert loaded.counts() == {"train": [10, 10], "val": [2, 2]}
        assert loaded.train.arrays.shape[1:] == (32, 32, 3)


class TestFolderDataset:
    def test_messy_folder(self, tmp_path):
        root = tmp_path / "data"
        for number in range(1, 13):
            write(root / str(number) / "a.png", png_bytes((number, 0, 0)))
            write(root / str(number) / "b.png", png_bytes((number, 1, 0)))
        write(root / "3" / ".hidden.png", png_bytes())
        write(root / "3" / "._a.png", b"\x00\x05\x16\x07 AppleDouble")
        write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1")
        write(root / "__MACOSX" / "3" / "._a.png", b"junk")
        write(root / ".git" / "HEAD", b"ref: refs/heads/main")
        write(root / "4" / "notes.txt", b"taken on monday")
        write(root / "5" / "broken.png", png_bytes()[:40])
        write(root / "5" / "cut.jpg", jpeg_bytes()[:len(jpeg_bytes()) // 2])
        write(root / "6" / "sub" / "deep.png", png_bytes())
        write(root / "readme.md", b"# my data")
        (root / "empty_class").mkdir()
        write(root / "only_junk" / "x.txt", b"no images here")
        os.symlink("/etc/hostname", root / "7" / "link.png")
        os.symlink(root / "1", root / "linked_class")

        scan = scan_image_folder(root)
        assert scan.classes == [str(n) for n in range(1, 13)]
        assert scan.empty_classes == ["empty_class", "only_junk"]
        reasons = skipped_reasons(scan.skipped)
        assert reasons["3/.hidden.png"] == "data.skip_hidden"
        assert reasons["3/._a.png"] == "data.skip_metadata"
        assert reasons["__MACOSX"] == "data.skip_metadata"
        assert reasons[".DS_Store"] == "data.skip_hidden"
        assert reasons[".git"] == "data.skip_hidden"
        assert reasons["4/notes.txt"] == "data.skip_not_image"
        assert reasons["5/broken.png"] == "data.err_image_corrupt"
        assert reasons["5/cut.jpg"] == "data.err_image_truncated"
        assert reasons["7/link.png"] == "data.skip_link"
        assert reasons["linked_class"] == "data.skip_link"
        assert reasons["readme.md"] == "data.skip_outside_class"
        assert len(scan.files["train"]["6"]) == 3  # nested folders belong to their class

    def test_loaded_folder_mapping_and_split(self, tmp_path):
        root = tmp_path / "data"
        for number in (1, 2, 10):
            for index in range(5):
                write(root / str(number) / f"{index}.png", png_bytes((number * 20, index * 40, 0)))
        loaded = load_dataset({"source": "folder", "path": str(root), "val_fraction": 0.2})
        assert loaded.classes == ["1", "2", "10"]
        assert loaded.counts() == {"train": [4, 4, 4], "val": [1, 1, 1]}
        image = loaded.train.load(0)
        assert image.mode == "RGB"
        assert loaded.train.display_name(0).startswith("1/")

    def test_train_val_layout(self, tmp_path):
        root = tmp_path / "data"
        for split, count in (("train", 3), ("val", 2)):
            for name in ("cat", "dog"):
                for index in range(count):
                    write(root / split / name / f"{index}.png", png_bytes())
        write(root / "val" / "bird" / "0.png", png_bytes())
        loaded = load_dataset({"source": "folder", "path": str(root)})
        assert loaded.split_kind == "folders"
        assert loaded.classes == ["cat", "dog"]
        assert loaded.counts() == {"train": [3, 3], "val": [2, 2]}
        assert skipped_reasons(loaded.skipped)["val/bird/0.png"] == "data.skip_unknown_class"

    def test_one_class_is_not_enough(self, tmp_path):
        write(tmp_path / "only" / "a.png", png_bytes())
        with pytest.raises(LabError) as info:
            load_dataset({"source": "folder", "path": str(tmp_path)})
        assert info.value.key == "data.err_too_few_classes"

    def test_missing_folder(self, tmp_path):
        with pytest.raises(LabError) as info:
            scan_image_folder(tmp_path / "nowhere")
        assert info.value.key == "data.err_folder_missing"

    def test_folder_outside_allowed_roots(self, tmp_path, monkeypatch):
        for name in ("a", "b"):
            write(tmp_path / "data" / name / "0.png", png_bytes())
        monkeypatch.setenv("RESNET_LAB_DATASET_ROOTS", str(tmp_path / "allowed"))
        with pytest.raises(LabError) as info:
            load_dataset({"source": "folder", "path": str(tmp_path / "data" / ".." / "data")})
        assert info.value.key == "data.err_folder_not_allowed"
        monkeypatch.setenv("RESNET_LAB_DATASET_ROOTS", str(tmp_path))
        assert load_dataset({"source": "folder", "path": str(tmp_path / "data")}).classes == ["a", "b"]

    def test_too_many_files(self, tmp_path, monkeypatch):
        monkeypatch.setattr(data_module, "MAX_DATASET_FILES", 3)
        for index in range(4):
            write(tmp_path / "a" / f"{index}.png", png_bytes())
        with pytest.raises(LabError) as info:
            scan_image_folder(tmp_path)
        assert info.value.key == "data.err_too_many_files"


class TestZipExtraction:
    def test_hostile_entries_are_skipped_and_nothing_escapes(self, tmp_path):
        archive = make_zip(
            [
                ("cats/a.png", png_bytes()),
                ("dogs/b.png", png_bytes()),
                ("../escape.png", b"outside"),
                ("cats/../../escape2.png", b"outside"),
                ("/tmp/absolute.png", b"absolute"),
                ("C:\\windows\\evil.png", b"drive"),
                ("__MACOSX/cats/._a.png", b"meta"),
                ("cats/._a.png", b"meta"),
                ("cats/.hidden.png", png_bytes()),
            ],
            symlinks={"dogs/link.png": "/etc/passwd", "cats/up": "../../.."},
        )
        destination = tmp_path / "upload"
        extracted = extract_zip(archive, "hostile.zip", destination=destination)

        written = sorted(p.relative_to(extracted.root).as_posix() for p in extracted.root.rglob("*") if p.is_file())
        assert written == ["cats/a.png", "dogs/b.png"]
        reasons = skipped_reasons(extracted.skipped)
        assert reasons["../escape.png"] == "data.skip_unsafe_path"
        assert reasons["cats/../../escape2.png"] == "data.skip_unsafe_path"
        assert reasons["/tmp/absolute.png"] == "data.skip_unsafe_path"
        assert reasons["C:\\windows\\evil.png"] == "data.skip_unsafe_path"
        assert reasons["dogs/link.png"] == "data.skip_link"
        assert reasons["cats/up"] == "data.skip_link"
        assert reasons["__MACOSX/cats/._a.png"] == "data.skip_metadata"
        assert reasons["cats/._a.png"] == "data.skip_metadata"
        assert reasons["cats/.hidden.png"] == "data.skip_hidden"
        assert not (tmp_path / "escape.png").exists()
        assert not (tmp_path / "escape2.png").exists()
        assert not any(p.is_symlink() for p in destination.rglob("*"))

    def test_declared_size_over_limit_is_refused_before_writing(self, tmp_path):
        archive = make_zip([("a/zeros.png", b"\x00" * (4 << 20)), ("b/x.png", png_bytes())])
        assert len(archive) < 50_000  # 4 MiB of zeros compress to a few KiB
        with pytest.raises(LabError) as info:
            extract_zip(archive, "bomb.zip", limits=ZipLimits(max_total_bytes=1 << 20), destination=tmp_path / "u")
        assert info.value.key == "data.err_zip_too_large"
        assert not (tmp_path / "u").exists()

    def test_single_member_limit(self, tmp_path):
        archive = make_zip([("a/zeros.png", b"\x00" * (2 << 20))])
        with pytest.raises(LabError) as info:
            extract_zip(archive, "bomb.zip", limits=ZipLimits(max_member_bytes=1 << 20), destination=tmp_path / "u")
        assert info.value.key == "data.err_zip_member_too_large"

    def test_lying_header_is_refused_and_cleaned_up(self, tmp_path):
        real_size = 8 << 20
        archive = make_zip([("a/zeros.png", b"\x00" * real_size)])
        # Declare 1,000 bytes in both the local header and the central directory.
        lying = archive.replace(struct.pack("<I", real_size), struct.pack("<I", 1000))
        assert lying != archive
        destination = tmp_path / "u"
        with pytest.raises(LabError) as info:
            extract_zip(lying, "liar.zip", destination=destination)
        assert info.value.key in ("data.err_zip_invalid", "data.err_zip_size_mismatch")
        assert not any(p.is_file() for p in destination.rglob("*"))

    def test_too_many_entries(self, tmp_path):
        archive = make_zip([(f"a/{index}.png", b"x") for index in range(11)])
        with pytest.raises(LabError) as info:
            extract_zip(archive, "many.zip", limits=ZipLimits(max_members=10), destination=tmp_path / "u")
        assert info.value.key == "data.err_zip_too_many_files"

    def test_not_a_zip(self, tmp_path):
        with pytest.raises(LabError) as info:
            extract_zip(b"PK but not really", "fake.zip", destination=tmp_path / "u")
        assert (info.value.key, info.value.params["name"]) == ("data.err_zip_invalid", "fake.zip")

    def test_concurrent_publish_keeps_first(self, tmp_path, monkeypatch):
        archive = make_zip([("a/1.png", png_bytes()), ("b/1.png", png_bytes())])
        first = extract_zip(archive, "d.zip", destination=tmp_path / "u")
        # A second session that checked before the first one published still extracts, then
        # finds the published folder when it renames and uses it.
        calls = []

        def not_published_at_first_look(published, digest):
            calls.append(published)
            return None if len(calls) == 1 else first

        monkeypatch.setattr(data_module, "_reuse_extraction", not_published_at_first_look)
        second = extract_zip(archive, "d.zip", destination=tmp_path / "u")
        assert second == first
        assert len(calls) == 2
        assert [p.name for p in (tmp_path / "u").iterdir()] == ["extracted"]

    def test_same_upload_reuses_extraction(self, tmp_path):
        archive = make_zip([("a/1.png", png_bytes()), ("b/1.png", png_bytes())])
        first = extract_zip(archive, "d.zip", destination=tmp_path / "u")
        marker = first.root / "a" / "1.png"
        stamp = marker.stat().st_mtime_ns
        second = extract_zip(io.BytesIO(archive), "d.zip", destination=tmp_path / "u")
        assert second.root == first.root
        assert marker.stat().st_mtime_ns == stamp

    def test_zip_dataset_end_to_end(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RESNET_LAB_DATA_DIR", str(tmp_path))
        entries = [(f"mydata/{n}/{i}.png", png_bytes((n * 10, i, 0))) for n in range(1, 13) for i in range(3)]
        entries += [("mydata/5/corrupt.png", b"\x89PNG\r\n\x1a\nnot really"), ("mydata/empty/", b"")]
        entries += [("__MACOSX/mydata/._1", b"meta")]
        extracted = extract_zip(make_zip(entries, symlinks={"mydata/2/l.png": "/etc/passwd"}), "mydata.zip")
        assert extracted.root.is_relative_to(tmp_path / "uploads")

        loaded = load_dataset({"source": "zip", "path": str(extracted.root), "upload_name": "mydata.zip"})
        assert loaded.classes == [str(n) for n in range(1, 13)]
        assert loaded.empty_classes == ["empty"]
        reasons = skipped_reasons(loaded.skipped)
        assert reasons["mydata/2/l.png"] == "data.skip_link"
        assert reasons["__MACOSX/mydata/._1"] == "data.skip_metadata"
        assert reasons["mydata/5/corrupt.png"] in ("data.err_image_corrupt", "data.err_image_truncated")
        assert sum(loaded.counts()["train"]) + sum(loaded.counts()["val"]) == 36
