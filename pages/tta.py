"""TTA page: test-time augmentation on photos, view by view, and what it does to accuracy.

Sections: the model (a finished run, a torchvision ImageNet ResNet, or an uploaded checkpoint),
the images (sample photos, uploads, camera), the views and the merge, the result per image, and
an evaluation on a labelled set. Everything is computed by core/tta.py; this file reads widgets
and draws.
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from core import jobs, tta, weights
from core.checkpoints import read_run_config
from core.data import DatasetSpec, extract_zip, load_dataset, sample_photos, scan_image_folder
from core.errors import LabError
from core.images import DecodedImage, decode_image
from core.models import canonical_name, weighted_depth
from ui.common import Translator, page_setup, show_error

MODEL_SOURCES = ("run", "imagenet", "checkpoint")
IMAGE_SOURCES = ("sample", "upload", "camera")
RUN_IMAGES = "run_val"  # one more image source when the model is a run: its own validation images
RUN_IMAGE_CHOICES = 12  # validation images offered, spread over the classes
EVAL_SOURCES = ("run_val", "zip")
NORMALIZATIONS = ("imagenet", "half")
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
DEFAULT_FAMILIES = ["identity", "hflip"]
DEFAULT_SAMPLE = "chelsea"
MAX_IMAGES = 6  # images analysed per page run; a warning appears when more are chosen
KEPT_UPLOADS = "tta_kept_uploads"  # [(name, bytes)]: the uploads, still there after a page switch
MAX_KEPT_BYTES = 20 * 1024 * 1024  # larger uploads are analysed but not kept in the session
THUMB_MIN_SIDE = 128  # small inputs (32 px) are enlarged with nearest-neighbour so pixels show
VIEW_COLUMNS = 5
EVAL_MIN, EVAL_MAX, EVAL_DEFAULT = 10, 500, 50
REFERENCE_COLOUR, TTA_COLOUR = "#9aa5b1", "#1f77b4"  # identity grey, TTA blue, in every chart
NEUTRAL_DELTA = "off"  # st.metric delta_color/delta_arrow for a delta that is information, not good or bad
CATEGORY_AXIS = "category"  # class names such as "3" must not become numbers on a Plotly axis
BASELINE_DASH = "dot"

t = page_setup("tta.title")


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def points(change: float) -> str:
    """Format a probability change in percentage points with its sign (-0.0 shows as +0.0)."""
    return f"{round(change * 100, 2) + 0.0:+.2f}"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def enlarge(pixels: np.ndarray, min_side: int = THUMB_MIN_SIDE) -> np.ndarray:
    """Repeat pixels (nearest neighbour) until the short side reaches `min_side`."""
    factor = max(1, math.ceil(min_side / min(pixels.shape[:2])))
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1) if factor > 1 else pixels


# --- models -----------------------------------------------------------------------------------


@st.cache_resource(max_entries=3, show_spinner=False)
def load_imagenet_bundle(weights_name: str, allow_download: bool = False) -> tta.ModelBundle:
    return tta.bundle_from_imagenet(weights_name, allow_download=allow_download)


@st.cache_resource(max_entries=3, show_spinner=False)
def load_run_bundle(run_id: str, finished: float | None) -> tta.ModelBundle:
    # `finished` is part of the cache key: a resumed and re-finished run gets reloaded.
    return tta.bundle_from_run(jobs.run_dir(run_id))


@st.cache_resource(max_entries=2, show_spinner=False)
def load_checkpoint_bundle(content_digest: str, name: str, input_size: int, normalization: str,
                           _data: bytes) -> tta.ModelBundle:
    return tta.bundle_from_checkpoint(_data, name, input_size, normalization)


def finished_runs() -> list[jobs.Run]:
    return [run for run in jobs.list_runs(kind="train") if run.status == jobs.DONE]


def default_model_source(runs: list[jobs.Run]) -> str:
    return "run" if runs else "imagenet"


def choose_run_model(t: Translator, runs: list[jobs.Run]) -> tuple[tta.ModelBundle, str] | None:
    if not runs:
        st.info(t("tta.no_runs"))
        return None
    by_id = {run.id: run for run in runs}
    run_id = st.selectbox(t("tta.run_select"), list(by_id), key="tta_run",
                          format_func=lambda rid: t("tta.run_option", name=by_id[rid].name or rid, run_id=rid))
    run = by_id[run_id]
    with st.spinner(t("tta.loading_model")):
        bundle = load_run_bundle(run.id, run.finished)
    return bundle, f"run:{run.id}:{run.finished}"


def imagenet_option(t: Translator, depth: int) -> str:
    cached = weights.is_cached(weights.DEFAULT_IMAGENET_WEIGHTS[depth])
    return t("tta.imagenet_option_cached" if cached else "tta.imagenet_option_missing", depth=depth)


def choose_imagenet_model(t: Translator) -> tuple[tta.ModelBundle, str] | None:
    cached = [d for d in IMAGENET_DEPTHS if weights.is_cached(weights.DEFAULT_IMAGENET_WEIGHTS[d])]
    default_index = IMAGENET_DEPTHS.index(cached[0]) if cached else 0
    depth = st.selectbox(t("tta.imagenet_depth"), IMAGENET_DEPTHS, index=default_index, key="tta_imagenet_depth",
                         persist_state="session", format_func=lambda d: imagenet_option(t, d))
    name = weights.DEFAULT_IMAGENET_WEIGHTS[depth]
    if not weights.is_cached(name):
        info = weights.weights_info(name)
        st.warning(t("data.err_weights_offline", file=info["file"], folder=info["folder"], url=info["url"]))
        if not st.button(t("tta.download_weights", size=info["size_mb"] or "?"), key="tta_download"):
            return None
        with st.spinner(t("tta.downloading")):
            bundle = load_imagenet_bundle(name, allow_download=True)
        return bundle, f"imagenet:{name}"
    with st.spinner(t("tta.loading_model")):
        bundle = load_imagenet_bundle(name)
    return bundle, f"imagenet:{name}"


def choose_checkpoint_model(t: Translator) -> tuple[tta.ModelBundle, str] | None:
    upload = st.file_uploader(t("tta.checkpoint_upload"), key="tta_checkpoint", help=t("tta.checkpoint_help"))
    left, right = st.columns(2)
    input_size = left.number_input(t("tta.checkpoint_input_size"), min_value=8, max_value=1024, value=None,
                                   step=8, key="tta_checkpoint_size", persist_state="session",
                                   placeholder=t("tta.checkpoint_size_auto"))
    normalization = right.selectbox(t("tta.checkpoint_normalization"), NORMALIZATIONS, key="tta_checkpoint_norm",
                                    persist_state="session", format_func=lambda n: t(f"tta.normalization_{n}"))
    if upload is None:
        st.info(t("tta.checkpoint_waiting"))
        return None
    data = upload.getvalue()
    key = digest(data)
    size = int(input_size) if input_size else 0
    with st.spinner(t("tta.loading_model")):
        bundle = load_checkpoint_bundle(key, upload.name, size, normalization, data)
    return bundle, f"checkpoint:{key}:{size}:{normalization}"


def describe_model(t: Translator, bundle: tta.ModelBundle) -> None:
    config = bundle.config
    pre = bundle.preprocessing
    name = canonical_name(config) or t("common.custom_model", depth=weighted_depth(config))
    st.caption(t(
        "tta.model_summary",
        name=name,
        classes=config.num_classes,
        size=pre.input_size,
        resize=t(f"tta.resize_{pre.resize}", resize_size=pre.resize_size or pre.input_size),
    ))
    if bundle.source == "checkpoint":
        st.caption(t("tta.checkpoint_inferred", stages=" · ".join(str(n) for n in config.stage_blocks),
                     block=config.block, stem=config.stem, classes=config.num_classes))
    for key, params in bundle.notes:
        st.caption(t(key, **params))


def model_section(t: Translator) -> tuple[tta.ModelBundle, str] | None:
    st.header(t("tta.model_header"))
    runs = finished_runs()
    if "tta_model_source" not in st.session_state:
        st.session_state["tta_model_source"] = default_model_source(runs)
    source = st.radio(t("tta.model_source"), MODEL_SOURCES, key="tta_model_source", persist_state="session",
                      horizontal=True, format_func=lambda s: t(f"tta.model_src_{s}"))
    try:
        if source == "run":
            chosen = choose_run_model(t, runs)
        elif source == "imagenet":
            chosen = choose_imagenet_model(t)
        else:
            chosen = choose_checkpoint_model(t)
    except LabError as error:
        show_error(t, error)
        return None
    if chosen is not None:
        describe_model(t, chosen[0])
    return chosen


# --- images -----------------------------------------------------------------------------------


def keep_uploads() -> None:
    """Remember the uploader's files: Streamlit empties the uploader when another page is opened."""
    uploads = st.session_state.get("tta_uploads") or []
    remembered = [(upload.name, upload.getvalue()) for upload in uploads[:MAX_IMAGES]]
    if sum(len(data) for _, data in remembered) <= MAX_KEPT_BYTES:
        st.session_state[KEPT_UPLOADS] = remembered
    else:
        st.session_state.pop(KEPT_UPLOADS, None)


def forget_uploads() -> None:
    st.session_state.pop(KEPT_UPLOADS, None)


def uploaded_files(t: Translator) -> list[tuple[str, bytes]]:
    uploads = st.file_uploader(t("tta.upload_label"), accept_multiple_files=True, key="tta_uploads",
                               help=t("tta.upload_help"), on_change=keep_uploads)
    if uploads:
        return [(upload.name, upload.getvalue()) for upload in uploads]
    remembered = st.session_state.get(KEPT_UPLOADS) or []
    if remembered:
        columns = st.columns([4, 1], vertical_alignment="center")
        columns[0].caption(t("tta.kept_uploads", count=len(remembered), names=", ".join(name for name,
                                                                                        _ in remembered)))
        columns[1].button(t("tta.forget_uploads"), key="tta_forget_uploads", on_click=forget_uploads)
    return list(remembered)


def run_images(t: Translator, run_id: str, class_names: list[str]) -> list[tuple[str, bytes]]:
    """Offer a few of the run's own validation images, so a digits model gets digits to look at."""
    try:
        split = run_validation_split(run_id)
    except LabError as error:
        show_error(t, error)
        return []
    offered = tta.pick_evenly(split.labels.tolist(), RUN_IMAGE_CHOICES)
    labels = {index: t("tta.run_image_option", index=index, label=class_names[int(split.labels[index])])
              for index in offered}
    chosen = st.multiselect(t("tta.run_image_select"), offered, default=offered[:2], key=f"tta_run_images_{run_id}",
                            persist_state="session", format_func=lambda index: labels[index])
    files = []
    for index in chosen:
        buffer = io.BytesIO()
        split.load(index).save(buffer, format="PNG")
        files.append((f"val-{index}.png", buffer.getvalue()))
    return files


def image_section(t: Translator, bundle: tta.ModelBundle | None) -> list[DecodedImage]:
    """Decode every chosen image through the shared decoder; bad files get a message each."""
    st.header(t("tta.images_header"))
    from_run = bundle is not None and bundle.source == "run"
    sources = (RUN_IMAGES, *IMAGE_SOURCES) if from_run else IMAGE_SOURCES
    source = st.radio(t("tta.image_source"), sources, key="tta_image_source", persist_state="session", horizontal=True,
                      format_func=lambda s: t(f"tta.src_{s}"))
    files: list[tuple[str, bytes]] = []
    if source == RUN_IMAGES:
        files = run_images(t, bundle.label, bundle.class_names)
    elif source == "sample":
        photos = {photo.name: photo for photo in sample_photos()}
        default = [DEFAULT_SAMPLE] if DEFAULT_SAMPLE in photos else []
        chosen = st.multiselect(t("tta.sample_select"), list(photos), default=default, key="tta_samples",
                                persist_state="session", format_func=lambda n: t(f"tta.sample_{n}"))
        files = [(photos[name].file_name, photos[name].data) for name in chosen]
    elif source == "upload":
        files = uploaded_files(t)
    else:
        shot = st.camera_input(t("tta.camera_label"), key="tta_camera")
        if shot is not None:
            files = [(shot.name or "camera.jpg", shot.getvalue())]
    if not files:
        st.info(t(f"tta.waiting_{source}"))
        return []

    if len(files) > MAX_IMAGES:
        st.warning(t("tta.too_many_images", limit=MAX_IMAGES, total=len(files)))
        files = files[:MAX_IMAGES]
    decoded: list[DecodedImage] = []
    for name, data in files:
        try:
            decoded.append(decode_image(data, name))
        except LabError as error:
            show_error(t, error)
    return decoded


# --- views ------------------------------------------------------------------------------------


def family_label(t: Translator, family: str) -> str:
    return t(f"tta.family_{family}", scales=", ".join(f"×{s:g}" for s in tta.SCALE_FACTORS),
             angles=", ".join(f"{a:+g}" for a in tta.ROTATION_DEGREES))


def view_label(t: Translator, view: tta.View) -> str:
    params = dict(view.label_params)
    params["position"] = t(f"tta.pos_{view.position}")
    return t(view.label_key, **params)


def views_section(t: Translator) -> tuple[list[str], str, int] | None:
    st.header(t("tta.views_header"))
    families = st.multiselect(t("tta.views_label"), tta.VIEW_FAMILIES, default=DEFAULT_FAMILIES, key="tta_families",
                              persist_state="session",
                              format_func=lambda f: family_label(t, f), help=t("tta.views_help"))
    left, right = st.columns([2, 1])
    mode = left.radio(t("tta.merge_label"), tta.MERGE_MODES, key="tta_merge", persist_state="session", horizontal=True,
                      format_func=lambda m: t(f"tta.merge_{m}"), help=t("tta.merge_help"))
    k = right.slider(t("tta.topk_label"), min_value=1, max_value=10, value=5, key="tta_topk", persist_state="session")
    if not families:
        st.warning(t("tta.err_no_views"))
        return None
    families = [family for family in tta.VIEW_FAMILIES if family in families]
    batch = tta.batch_views(families)
    st.caption(t("tta.views_count", views=len(batch), merged=len(tta.expand_views(families))))
    return families, mode, k


@st.cache_data(max_entries=24, show_spinner=False)
def view_batch(model_key: str, image_key: str, families: tuple[str, ...], _bundle: tta.ModelBundle,
               _decoded: DecodedImage) -> tuple[np.ndarray, np.ndarray]:
    """(thumbnails (V, S, S, 3) uint8, logits (V, K)) of one image's batch, cached per model and image."""
    views = tta.batch_views(families)
    inputs, logits = tta.run_views(_bundle.model, _decoded.image, _bundle.preprocessing, views)
    thumbnails = np.stack([tta.to_display(pixels, _bundle.preprocessing) for pixels in inputs])
    return thumbnails, logits.numpy()


# --- one image's result -----------------------------------------------------------------------


def merged_chart(t: Translator, prediction: tta.TTAPrediction, names: list[str], k: int) -> go.Figure:
    top = tta.top_k(prediction.merged, k)
    classes = [names[index] for index, _ in top][::-1]
    merged = [prob for _, prob in top][::-1]
    reference = [float(prediction.reference[index]) for index, _ in top][::-1]
    figure = go.Figure()
    figure.add_trace(go.Bar(x=reference, y=classes, orientation="h", name=t("tta.legend_identity"),
                            marker_color=REFERENCE_COLOUR))
    figure.add_trace(go.Bar(x=merged, y=classes, orientation="h", name=t("tta.legend_tta"), marker_color=TTA_COLOUR,
                            text=[percent(p) for p in merged], textposition="outside"))
    figure.update_layout(
        title=t("tta.chart_title", k=len(top), mode=t(f"tta.merge_{prediction.merge_mode}")),
        barmode="group", height=160 + 45 * len(top), margin=dict(l=10, r=10, t=50, b=80),
        # Anchored to the figure's bottom edge, under the axis title, at any chart height.
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom"),
    )
    figure.update_xaxes(title_text=t("tta.axis_probability"), range=[0, 1.15], tickformat=".0%")
    figure.update_yaxes(type=CATEGORY_AXIS)
    return figure


def changes_table(t: Translator, changes: list[tuple[int, float]], prediction: tta.TTAPrediction,
                  names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        t("tta.col_class"): [names[index] for index, _ in changes],
        t("tta.col_identity"): [percent(float(prediction.reference[index])) for index, _ in changes],
        t("tta.col_tta"): [percent(float(prediction.merged[index])) for index, _ in changes],
        t("tta.col_change"): [points(change) for _, change in changes],
    })


def show_comparison(t: Translator, prediction: tta.TTAPrediction, names: list[str], k: int) -> None:
    comparison = tta.compare_to_identity(prediction, k)
    agreeing = sum(top == comparison.merged_top for top in comparison.per_view_top)
    col1, col2, col3 = st.columns(3)
    # How much TTA moved the probability of the class it predicts, whichever class that is.
    change = comparison.merged_confidence - float(prediction.reference[comparison.merged_top])
    same_class = comparison.merged_top == comparison.reference_top
    col1.metric(t("tta.metric_identity"), names[comparison.reference_top],
                t("tta.confidence", p=percent(comparison.reference_confidence)),
                delta_color=NEUTRAL_DELTA, delta_arrow=NEUTRAL_DELTA)
    # A confidence change is good or bad only when the class stays the same.
    col2.metric(t("tta.metric_tta"), names[comparison.merged_top],
                t("tta.confidence_change", p=percent(comparison.merged_confidence), change=points(change)),
                delta_color="normal" if same_class else NEUTRAL_DELTA,
                delta_arrow="auto" if same_class else NEUTRAL_DELTA)
    col3.metric(t("tta.metric_agreement"), f"{agreeing}/{len(comparison.per_view_top)}",
                percent(comparison.agreement), delta_color=NEUTRAL_DELTA, delta_arrow=NEUTRAL_DELTA,
                help=t("tta.agreement_help"))
    if comparison.merged_top != comparison.reference_top:
        st.warning(t("tta.changed", before=names[comparison.reference_top], after=names[comparison.merged_top]))
    else:
        st.success(t("tta.unchanged", name=names[comparison.merged_top]))

    gained_col, lost_col = st.columns(2)
    gained_col.markdown(t("tta.gained_header"))
    if comparison.gained:
        gained_col.dataframe(changes_table(t, comparison.gained, prediction, names), hide_index=True)
    else:
        gained_col.caption(t("tta.none"))
    lost_col.markdown(t("tta.lost_header"))
    if comparison.lost:
        lost_col.dataframe(changes_table(t, comparison.lost, prediction, names), hide_index=True)
    else:
        lost_col.caption(t("tta.none"))


def show_views(t: Translator, prediction: tta.TTAPrediction, thumbnails: np.ndarray, names: list[str], k: int) -> None:
    st.subheader(t("tta.views_grid_header", k=k))
    merged = set(prediction.merged_views)
    probs = prediction.view_probs
    for start in range(0, len(prediction.views), VIEW_COLUMNS):
        columns = st.columns(VIEW_COLUMNS)
        for column, index in zip(columns, range(start, min(start + VIEW_COLUMNS, len(prediction.views)))):
            view = prediction.views[index]
            label = view_label(t, view)
            if index not in merged:
                label = t("tta.view_reference_only", label=label)
            column.image(enlarge(thumbnails[index]), caption=label, width="stretch")
            lines = [f"{names[cls]}: {percent(p)}" for cls, p in tta.top_k(probs[index], k)]
            column.caption("  \n".join(lines))


def show_image_result(t: Translator, decoded: DecodedImage, bundle: tta.ModelBundle, model_key: str,
                      families: list[str], mode: str, k: int) -> None:
    for note in decoded.notes:
        st.caption(t(note.key, **note.params))
    if tta.limit_aspect(decoded.image) is not decoded.image:
        st.caption(t("tta.note_aspect_limited", ratio=tta.MAX_VIEW_ASPECT))
    image_key = digest(decoded.image.tobytes()) + f"{decoded.image.size}"
    with st.spinner(t("tta.predicting")):
        thumbnails, logits = view_batch(model_key, image_key, tuple(families), bundle, decoded)
    views = tta.batch_views(families)
    prediction = tta.combine(views, None, torch.from_numpy(logits), families, mode)
    names = bundle.class_names

    original_col, input_col, chart_col = st.columns([1, 1, 2])
    width, height = decoded.size
    original_col.image(decoded.image, caption=t("tta.original_caption", width=width, height=height),
                       width="stretch")
    size = bundle.preprocessing.input_size
    input_col.image(enlarge(thumbnails[0]), caption=t("tta.input_caption", size=size), width="stretch")
    chart_col.plotly_chart(merged_chart(t, prediction, names, k), key=f"tta_chart_{image_key}")
    show_comparison(t, prediction, names, k)
    show_views(t, prediction, thumbnails, names, k)


def results_section(t: Translator, images: list[DecodedImage], bundle: tta.ModelBundle, model_key: str,
                    families: list[str], mode: str, k: int) -> None:
    st.header(t("tta.results_header"))
    if len(images) > 1:
        tabs = st.tabs([f"{number}. {decoded.name}" for number, decoded in enumerate(images, start=1)])
    else:
        tabs = [st.container()]
    for tab, decoded in zip(tabs, images):
        with tab:
            try:
                show_image_result(t, decoded, bundle, model_key, families, mode, k)
            except LabError as error:
                show_error(t, error)


# --- evaluation -------------------------------------------------------------------------------


@st.cache_resource(max_entries=2, show_spinner=False)
def run_validation_split(run_id: str):
    """Rebuild the validation split of a run from its stored dataset spec."""
    config = read_run_config(jobs.run_dir(run_id))
    if not config.get("data"):
        raise LabError("tta.err_no_dataset_spec", run=run_id)
    return load_dataset(DatasetSpec.from_dict(config["data"])).val


def labelled_samples(t: Translator, bundle: tta.ModelBundle, source: str, limit: int):
    """Return ([(image loader, label)], images available) of the chosen labelled set, or None to wait."""
    if source == "run_val":
        split = run_validation_split(bundle.label)
        chosen = tta.pick_evenly(split.labels.tolist(), limit)
        return [(lambda i=i: split.load(i), int(split.labels[i])) for i in chosen], len(split)

    upload = st.file_uploader(t("tta.eval_zip_upload"), key="tta_eval_zip", help=t("tta.eval_zip_help"))
    if upload is None:
        st.info(t("tta.eval_zip_waiting"))
        return None
    extracted = extract_zip(upload.getvalue(), upload.name)
    scan = scan_image_folder(extracted.root)
    files = scan.files.get("val") if scan.has_val_folder else scan.files["train"]
    mapping, unknown = tta.match_classes(list(files), bundle.class_names)
    if unknown:
        st.warning(t("tta.eval_unknown_classes", names=", ".join(unknown[:10]), count=len(unknown)))
    for skipped in scan.skipped[:10]:
        st.caption(t("tta.eval_skipped", path=skipped.path, reason=t(skipped.reason, **skipped.params)))
    pairs = [(path, mapping[folder]) for folder, paths in files.items() if folder in mapping for path in paths]
    if not pairs:
        st.error(t("tta.eval_no_matching", examples=", ".join(bundle.class_names[:5])))
        return None
    chosen = tta.pick_evenly([label for _, label in pairs], limit)
    root = extracted.root

    def loader(path):
        return lambda: decode_image(path.read_bytes(), path.relative_to(root).as_posix()).image

    return [(loader(pairs[i][0]), pairs[i][1]) for i in chosen], len(pairs)


def view_set_label(t: Translator, set_name: str) -> str:
    if set_name == "identity":
        return t("tta.eval_set_identity")
    if set_name == "all":
        return t("tta.eval_set_all")
    return t("tta.eval_set_family", family=family_label(t, set_name))


def evaluation_table(t: Translator, report: tta.EvaluationReport) -> pd.DataFrame:
    rows = []
    for set_name, by_mode in report.set_accuracy.items():
        row = {t("tta.col_view_set"): view_set_label(t, set_name), t("tta.col_views"): report.set_sizes[set_name]}
        for mode, accuracy in by_mode.items():
            row[t(f"tta.merge_{mode}")] = percent(accuracy)
        rows.append(row)
    return pd.DataFrame(rows)


def single_view_chart(t: Translator, report: tta.EvaluationReport) -> go.Figure:
    views = {view.name: view for view in tta.expand_views(tta.VIEW_FAMILIES)}
    labels = [view_label(t, views[name]) for name in report.view_names]
    accuracies = [report.single_view_accuracy[name] for name in report.view_names]
    colours = [REFERENCE_COLOUR if name == "identity" else TTA_COLOUR for name in report.view_names]
    figure = go.Figure(go.Bar(x=labels, y=accuracies, text=[percent(a) for a in accuracies], textposition="outside",
                              marker_color=colours))
    figure.add_hline(y=report.baseline, line_dash=BASELINE_DASH)
    figure.update_layout(title=t("tta.eval_single_title"), height=380, margin=dict(l=10, r=10, t=50, b=10))
    figure.update_yaxes(title_text=t("tta.axis_accuracy"), range=[0, 1.1], tickformat=".0%")
    figure.update_xaxes(title_text=t("tta.axis_view"), type=CATEGORY_AXIS)
    return figure


def show_report(t: Translator, report: tta.EvaluationReport) -> None:
    best_set, best_mode, best = max(
        ((set_name, mode, accuracy) for set_name, by_mode in report.set_accuracy.items()
         for mode, accuracy in by_mode.items()), key=lambda item: item[2])
    col1, col2, col3 = st.columns(3)
    col1.metric(t("tta.eval_images"), report.n_images)
    col2.metric(t("tta.eval_without"), percent(report.baseline))
    col3.metric(t("tta.eval_best"), percent(best), points(best - report.baseline),
                help=t("tta.eval_best_help", set=view_set_label(t, best_set), mode=t(f"tta.merge_{best_mode}")))
    st.dataframe(evaluation_table(t, report), hide_index=True)
    st.plotly_chart(single_view_chart(t, report), key="tta_eval_chart")


def evaluation_section(t: Translator, bundle: tta.ModelBundle, model_key: str, families: list[str]) -> None:
    st.header(t("tta.eval_header"))
    st.caption(t("tta.eval_intro"))
    sources = EVAL_SOURCES if bundle.source == "run" else ("zip",)
    source = st.radio(t("tta.eval_source"), sources, key="tta_eval_source", persist_state="session", horizontal=True,
                      format_func=lambda s: t(f"tta.eval_src_{s}"))
    limit = st.slider(t("tta.eval_max_images"), EVAL_MIN, EVAL_MAX, EVAL_DEFAULT, step=10, key="tta_eval_limit",
                      persist_state="session")
    try:
        found = labelled_samples(t, bundle, source, limit)
    except LabError as error:
        show_error(t, error)
        return
    if found is None:
        return
    samples, available = found
    st.caption(t("tta.eval_ready", n=len(samples), total=available,
                 views=len(tta.expand_views(["identity", *families]))))
    signature = (model_key, source, limit, tuple(families))
    if st.button(t("tta.eval_button"), key="tta_eval_run", type="primary"):
        bar = st.progress(0.0, text=t("tta.eval_progress", done=0, total=len(samples)))

        def progress(done: int) -> None:
            bar.progress(done / len(samples), text=t("tta.eval_progress", done=done, total=len(samples)))

        try:
            report = tta.evaluate(bundle.model, ((load(), label) for load, label in samples),
                                  bundle.preprocessing, families, progress=progress)
        except LabError as error:
            show_error(t, error)
            return
        st.session_state["tta_eval"] = {"signature": signature, "report": report}
    stored = st.session_state.get("tta_eval")
    if stored and stored["signature"] == signature:
        show_report(t, stored["report"])


# --- page -------------------------------------------------------------------------------------


st.title(t("tta.title"))
st.markdown(t("tta.intro"))

chosen_model = model_section(t)
chosen_images = image_section(t, chosen_model[0] if chosen_model is not None else None)
chosen_views = views_section(t)

if chosen_model is not None and chosen_views is not None:
    model_bundle, model_key = chosen_model
    view_families, merge_mode, top = chosen_views
    if chosen_images:
        results_section(t, chosen_images, model_bundle, model_key, view_families, merge_mode, top)
    evaluation_section(t, model_bundle, model_key, view_families)
elif chosen_model is None:
    st.info(t("tta.need_model"))
