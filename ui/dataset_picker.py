"""Dataset and preprocessing widgets for the Entrenamiento page.

`pick_dataset` renders the source choice (embedded digits, faces, textures, CIFAR-10, a zip
upload or a server folder), the split options and a preview: classes with their index and
counts per split, sample images, empty classes and the skipped files. It returns a
`core.data.DatasetSpec` dict, or None while the data is not usable.

`pick_preprocessing` renders input size, resize policy, channels and normalisation, and returns
the complete `core.data.Preprocessing` dict that the run stores (mean/std already measured when
the user picks the dataset's own statistics).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.data import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_POLICIES,
    DatasetSpec,
    LoadedDataset,
    Preprocessing,
    extract_zip,
    fit_normalization,
    load_dataset,
    sample_indices,
)
from core.errors import LabError
from ui.common import Translator, show_error

SOURCES = ("digits", "faces", "textures", "cifar10", "zip", "folder")
INPUT_SIZES = (32, 64, 96, 128, 160, 224)
NORMALIZATIONS = ("dataset", "imagenet", "half")
SAMPLES_PER_CLASS = 4
MAX_PREVIEW_CLASSES = 12  # sample rows drawn; the table lists every class
MAX_SKIPPED_ROWS = 500
THUMB_SIDE = 72  # preview thumbnails, nearest-neighbour enlarged so 8×8 digits stay sharp


@st.cache_resource(max_entries=8, ttl=900, show_spinner=False)
def _cached_dataset(spec_json: str) -> LoadedDataset:
    """Shared between sessions: treat the result as read-only."""
    return load_dataset(json.loads(spec_json))


@st.cache_data(max_entries=32, ttl=900, show_spinner=False)
def _cached_statistics(spec_json: str, preprocessing_json: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    loaded = _cached_dataset(spec_json)
    fitted = fit_normalization(loaded.train, Preprocessing.from_dict(json.loads(preprocessing_json)),
                               seed=loaded.spec.seed)
    return fitted.mean, fitted.std


def _spec_json(spec: DatasetSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


def _source_inputs(t: Translator, source: str, key: str) -> dict | None:
    """Source-specific fields of the spec, or None while the user has not given them yet."""
    if source == "zip":
        upload = st.file_uploader(t("data.zip_label"), type=["zip"], key=f"{key}_zip", help=t("data.zip_help"))
        if upload is None:
            st.info(t("data.zip_waiting"))
            return None
        with st.spinner(t("data.zip_extracting")):
            extracted = extract_zip(upload, name=upload.name)
        st.caption(t("data.zip_extracted", files=extracted.files, size_mib=f"{extracted.total_bytes / 2**20:.1f}",
                     skipped=len(extracted.skipped)))
        return {"path": str(extracted.root), "upload_name": upload.name}
    if source == "folder":
        path = st.text_input(t("data.folder_label"), key=f"{key}_folder", persist_state="session",
                             help=t("data.folder_help"), placeholder=t("data.folder_placeholder"))
        if not path.strip():
            st.info(t("data.folder_waiting"))
            return None
        return {"path": path.strip()}
    if source == "cifar10":
        allow = st.checkbox(t("data.cifar_allow_download"), key=f"{key}_cifar_download", persist_state="session",
                            help=t("data.cifar_allow_download_help"))
        return {"allow_download": allow}
    return {}


def _split_options(t: Translator, key: str) -> dict:
    columns = st.columns(3)
    val_percent = columns[0].slider(t("data.val_fraction"), min_value=5, max_value=50, value=20, step=5,
                                    key=f"{key}_val", persist_state="session", help=t("data.val_fraction_help"),
                                    format="%d %%")
    seed = columns[1].number_input(t("data.seed"), min_value=0, max_value=2**31 - 1, value=0, step=1,
                                   key=f"{key}_seed", persist_state="session", help=t("data.seed_help"))
    cap = columns[2].number_input(t("data.max_per_class"), min_value=0, max_value=100_000, value=0, step=50,
                                  key=f"{key}_cap", persist_state="session", help=t("data.max_per_class_help"))
    return {"val_fraction": val_percent / 100, "seed": int(seed), "max_per_class": int(cap) or None}


def pick_dataset(t: Translator, key: str = "data") -> dict | None:
    """Render the dataset widgets and preview; returns a DatasetSpec dict or None when not usable."""
    source = st.radio(t("data.source_label"), SOURCES, format_func=lambda s: t(f"data.source_{s}"),
                      key=f"{key}_source", persist_state="session", horizontal=True)
    st.caption(t(f"data.source_{source}_help"))

    try:
        fields = _source_inputs(t, source, key)
        if fields is None:
            return None
        with st.expander(t("data.split_options"), expanded=False):
            fields.update(_split_options(t, key))
        spec = DatasetSpec(source=source, **fields)
        with st.spinner(t("data.loading")):
            full = _cached_dataset(_spec_json(spec))
    except LabError as error:
        show_error(t, error)
        return None

    chosen = st.multiselect(t("data.classes_label"), full.classes, default=full.classes, key=f"{key}_classes",
                            persist_state="session", help=t("data.classes_help"))
    kept = [name for name in full.classes if name in chosen]
    if len(kept) < 2:
        st.warning(t("data.classes_too_few"))
        return None
    if kept != full.classes:
        spec = spec.replace(classes=tuple(kept))

    render_preview(t, full, kept)
    return spec.to_dict()


def render_preview(t: Translator, loaded: LoadedDataset, kept: list[str] | None = None) -> None:
    """Classes with index and counts, sample images, empty classes and skipped files."""
    kept = kept or loaded.classes
    counts = loaded.counts()
    rows = []
    for name, n_train, n_val in zip(loaded.classes, counts["train"], counts["val"]):
        index = kept.index(name) if name in kept else None
        rows.append({t("data.col_index"): index, t("data.col_class"): name,
                     t("data.col_train"): n_train, t("data.col_val"): n_val})
    kept_train = sum(n for name, n in zip(loaded.classes, counts["train"]) if name in kept)
    kept_val = sum(n for name, n in zip(loaded.classes, counts["val"]) if name in kept)

    st.markdown(t("data.preview_title"))
    st.caption(t(f"data.split_kind_{loaded.split_kind}", train=kept_train, val=kept_val, classes=len(kept)))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(t("data.mapping_note"))

    if loaded.empty_classes:
        st.warning(t("data.empty_classes", names=", ".join(loaded.empty_classes)))
    _render_samples(t, loaded, kept)
    _render_skipped(t, loaded)


def _thumbnail(image: Image.Image) -> np.ndarray:
    scale = max(1, THUMB_SIDE // max(image.size))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    if scale == 1:
        image = image.copy()
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), resample)
        return np.asarray(image)
    return np.asarray(image.resize((image.width * scale, image.height * scale), resample))


def _render_samples(t: Translator, loaded: LoadedDataset, kept: list[str]) -> None:
    chosen = sample_indices(loaded.train, len(loaded.classes), SAMPLES_PER_CLASS, seed=loaded.spec.seed)
    shown = [name for name in loaded.classes if name in kept][:MAX_PREVIEW_CLASSES]
    with st.expander(t("data.samples_title"), expanded=True):
        images, captions = [], []  # one flowing gallery, class after class, each image captioned
        for name in shown:
            for index in chosen[loaded.classes.index(name)]:
                try:
                    images.append(_thumbnail(loaded.train.load(index)))
                except LabError:
                    continue  # the file changed since the scan; the run will report it
                captions.append(name)
        if images:
            st.image(images, caption=captions)
        if len(kept) > len(shown):
            st.caption(t("data.samples_more", count=len(kept) - len(shown)))


def _render_skipped(t: Translator, loaded: LoadedDataset) -> None:
    if not loaded.skipped:
        return
    with st.expander(t("data.skipped_title", count=len(loaded.skipped)), expanded=False):
        rows = [{t("data.col_file"): s.path, t("data.col_reason"): t(s.reason, **s.params)}
                for s in loaded.skipped[:MAX_SKIPPED_ROWS]]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if len(loaded.skipped) > MAX_SKIPPED_ROWS:
            st.caption(t("data.skipped_more", count=len(loaded.skipped) - MAX_SKIPPED_ROWS))


def pick_preprocessing(t: Translator, spec: dict, key: str = "prep", pretrained: bool = False,
                       min_input_size: int = 8) -> dict | None:
    """Render the preprocessing widgets; returns the Preprocessing dict the run will store.

    With `pretrained` (ImageNet weights) the input keeps 3 channels and ImageNet statistics are
    the default. `min_input_size` comes from the architecture (its total stride).
    """
    source = spec["source"]
    sizes = [s for s in INPUT_SIZES if s >= min_input_size] or [min_input_size]
    default_size = DEFAULT_INPUT_SIZE.get(source, 64)
    default_size = default_size if default_size in sizes else sizes[0]

    with st.expander(t("data.prep_title"), expanded=False):
        columns = st.columns(2)
        size = columns[0].selectbox(t("data.prep_input_size"), sizes, index=sizes.index(default_size),
                                    key=f"{key}_size", persist_state="session",
                                    format_func=lambda s: t("data.prep_pixels", size=s))
        resize = columns[1].selectbox(t("data.prep_resize"), RESIZE_POLICIES, key=f"{key}_resize",
                                      persist_state="session", format_func=lambda p: t(f"data.prep_resize_{p}"),
                                      help=t("data.prep_resize_help"))
        gray = columns[0].checkbox(t("data.prep_grayscale"), value=False, key=f"{key}_gray", persist_state="session",
                                   disabled=pretrained, help=t("data.prep_grayscale_help"))
        normalizations = NORMALIZATIONS
        default_norm = "imagenet" if pretrained else "dataset"
        norm = columns[1].radio(t("data.prep_normalization"), normalizations,
                                index=normalizations.index(default_norm), key=f"{key}_norm", persist_state="session",
                                format_func=lambda n: t(f"data.prep_norm_{n}"), help=t("data.prep_norm_help"))

        channels = 1 if gray and not pretrained else 3
        base = Preprocessing(input_size=int(size), resize=resize,
                             resize_size=round(size * 256 / 224) if resize == "resize_crop" else None,
                             channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)
        try:
            if norm == "imagenet":
                mean = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,)
                std = IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,)
                preprocessing = base.replace(mean=mean, std=std)
            elif norm == "dataset":
                with st.spinner(t("data.prep_measuring")):
                    mean, std = _cached_statistics(json.dumps(spec, sort_keys=True),
                                                   json.dumps(base.to_dict(), sort_keys=True))
                preprocessing = base.replace(mean=mean, std=std)
            else:
                preprocessing = base
        except LabError as error:
            show_error(t, error)
            return None

        st.caption(t("data.prep_summary", mean=", ".join(f"{m:.3f}" for m in preprocessing.mean),
                     std=", ".join(f"{s:.3f}" for s in preprocessing.std)))
        if pretrained and norm != "imagenet":
            st.warning(t("data.prep_pretrained_stats"))
    return preprocessing.to_dict()
