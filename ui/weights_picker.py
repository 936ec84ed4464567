"""Initial-weights widget for the Entrenamiento page.

Choices: none (random initialisation), torchvision ImageNet weights for the current
architecture, an uploaded .pth/.safetensors checkpoint, or a finished run's weights. Before
the run starts the widget checks, on the meta device, that the weights fit the architecture,
and lists the head it will replace. It returns the `core.weights.load_weights_spec` dict.
"""

from __future__ import annotations

import streamlit as st
import torch

from core import weights
from core.errors import LabError
from core.models import ResNetConfig
from ui.common import Translator, show_error

KINDS = ("none", "imagenet", "upload", "run")
UPLOAD_TYPES = ["pth", "pt", "bin", "ckpt", "safetensors"]


@st.cache_resource(max_entries=4, show_spinner=False)
def _cached_checkpoint(path: str) -> dict:
    """Shared between sessions: treat the tensors as read-only."""
    with open(path, "rb") as handle:
        return weights.read_checkpoint(handle.read(), path)


def _show_fit(t: Translator, config: ResNetConfig, state_dict: dict, name: str) -> bool:
    """Show whether `state_dict` fits `config` and which head tensors get replaced."""
    try:
        report = weights.check_fits(config, state_dict, name)
    except LabError as error:
        show_error(t, error)
        return False
    if report.stripped_prefixes:
        st.caption(t("data.weights_prefixes", prefixes=", ".join(report.stripped_prefixes)))
    if report.replaced_head:
        changes = "; ".join(
            t("data.weights_head_change", tensor=h.key,
              old="×".join(map(str, h.checkpoint_shape)) if h.checkpoint_shape else "-",
              new="×".join(map(str, h.model_shape)))
            for h in report.replaced_head)
        st.info(t("data.weights_head_replaced", changes=changes))
    st.success(t("data.weights_fit", count=report.loaded))
    return True


def _imagenet_shapes(depth: int) -> dict:
    """torchvision's ResNet-<depth> state dict on the meta device: names and shapes, no data."""
    import torchvision

    with torch.device("meta"):
        return getattr(torchvision.models, f"resnet{depth}")().state_dict()


def _pick_imagenet(t: Translator, config: ResNetConfig, key: str) -> dict | None:
    depth = weights.canonical_imagenet_depth(config)
    if depth is None:
        st.warning(t("data.weights_arch_not_imagenet"))
        return None
    names = [n for n in weights.IMAGENET_WEIGHT_NAMES if weights.weights_depth(n) == depth]
    default = names.index(weights.DEFAULT_IMAGENET_WEIGHTS[depth])
    name = st.selectbox(t("data.weights_imagenet_label"), names, index=default, key=f"{key}_imagenet",
                        persist_state="session")
    info = weights.weights_info(name)
    st.caption(t("data.weights_imagenet_facts", params=f"{info['num_params']:,}", size=info["size_mb"],
                 acc=info["acc_at_1"]))

    if not _show_fit(t, config, _imagenet_shapes(depth), name):
        return None
    if info["cached"]:
        st.success(t("data.weights_cached", file=info["file"], folder=info["folder"]))
        return {"kind": "imagenet", "weights": name, "allow_download": False}

    st.warning(t("data.err_weights_offline", file=info["file"], folder=info["folder"], url=info["url"]))
    if st.button(t("data.weights_download_now"), key=f"{key}_download"):
        bar = st.progress(0.0, text=t("data.weights_downloading", file=info["file"]))

        def report(done: int, total: int) -> None:
            fraction = done / total if total else 0.0
            bar.progress(min(fraction, 1.0), text=t("data.weights_download_progress", file=info["file"],
                                                     mib=f"{done / 2**20:.1f}"))

        try:
            weights.download_file(info["url"], weights.weights_path(name), report)
        except LabError as error:
            show_error(t, error)
        except OSError:
            show_error(t, LabError("data.err_weights_offline", file=info["file"], folder=info["folder"],
                                   url=info["url"]))
        else:
            st.rerun()
    allow = st.checkbox(t("data.weights_allow_download"), key=f"{key}_allow_download", persist_state="session",
                        help=t("data.weights_allow_download_help"))
    return {"kind": "imagenet", "weights": name, "allow_download": allow} if allow else None


def _pick_upload(t: Translator, config: ResNetConfig, key: str) -> dict | None:
    upload = st.file_uploader(t("data.weights_upload_label"), type=UPLOAD_TYPES, key=f"{key}_upload",
                              help=t("data.weights_upload_help"))
    if upload is None:
        return None
    try:
        path = weights.save_uploaded_checkpoint(upload, upload.name)
        state_dict = _cached_checkpoint(str(path))
    except LabError as error:
        show_error(t, error)
        return None
    try:
        inferred = weights.infer_config_from_state_dict(state_dict)
        st.caption(t("data.weights_inferred", blocks="-".join(map(str, inferred.stage_blocks)),
                     block=inferred.block, stem=inferred.stem, classes=inferred.num_classes))
    except LabError as error:
        st.caption(t(error.key, **error.params))
    if not _show_fit(t, config, state_dict, upload.name):
        return None
    return {"kind": "upload", "path": str(path), "name": upload.name}


def _finished_runs() -> list:
    from core import jobs

    return [run for run in jobs.list_runs(kind="train") if run.status == jobs.DONE]


def _pick_run(t: Translator, config: ResNetConfig, key: str) -> dict | None:
    from core import jobs
    from core.checkpoints import final_weights_path

    runs = _finished_runs()
    if not runs:
        st.info(t("data.weights_no_runs"))
        return None
    by_id = {run.id: run for run in runs}
    run_id = st.selectbox(t("data.weights_run_label"), list(by_id), key=f"{key}_run",
                          format_func=lambda r: t("data.weights_run_option", name=by_id[r].name, run_id=r))
    path = final_weights_path(jobs.Store().run_dir(run_id))
    if path is None:
        show_error(t, LabError("data.err_checkpoint_missing", name=run_id, path=str(jobs.Store().run_dir(run_id))))
        return None
    classes = by_id[run_id].config.get("class_names") or []
    if classes:
        st.caption(t("data.weights_run_classes", classes=", ".join(map(str, classes))))
    try:
        state_dict = _cached_checkpoint(str(path))
    except LabError as error:
        show_error(t, error)
        return None
    if not _show_fit(t, config, state_dict, run_id):
        return None
    return {"kind": "run", "run_id": run_id, "path": str(path)}


def pick_weights(t: Translator, config: ResNetConfig, key: str = "weights") -> dict:
    """Render the initial-weights widgets for `config` (the architecture the run will build).

    `config` should already have the run's class count and input channels, so the head check
    is the real one. Returns {"kind": "none"} whenever the chosen weights cannot be used yet.
    """
    kind = st.radio(t("data.weights_label"), KINDS, format_func=lambda k: t(f"data.weights_kind_{k}"),
                    key=f"{key}_kind", persist_state="session", horizontal=True)
    st.caption(t(f"data.weights_kind_{kind}_help"))
    pickers = {"imagenet": _pick_imagenet, "upload": _pick_upload, "run": _pick_run}
    if kind == "none":
        return {"kind": "none"}
    chosen = pickers[kind](t, config, key)
    if chosen is None:
        st.caption(t("data.weights_fallback_none"))
        return {"kind": "none"}
    return chosen
