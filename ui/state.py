"""Per-session state shared by the pages, initialised in one idempotent call.

Everything lives in `st.session_state`, so each browser session has its own settings and no
session can see or change another's. Module-level variables here would be shared by every
user of the server, so there are none.
"""

from __future__ import annotations

import fnmatch

import streamlit as st

from core.i18n import DEFAULT_LANGUAGE, LANGUAGES
from core.models import ResNetConfig, imagenet_config

LANG = "lang"
ARCH_CONFIG = "arch_config"
SCHEDULE_JSON = "schedule_json"


def default_arch_config() -> ResNetConfig:
    return imagenet_config(18)


def init_state() -> None:
    """Fill in every shared key that is missing; safe to call on every script run."""
    if LANG not in st.session_state:
        requested = st.query_params.get("lang")
        st.session_state[LANG] = requested if requested in LANGUAGES else DEFAULT_LANGUAGE
    if ARCH_CONFIG not in st.session_state:
        st.session_state[ARCH_CONFIG] = default_arch_config().to_dict()
    if SCHEDULE_JSON not in st.session_state:
        st.session_state[SCHEDULE_JSON] = None


def get_lang() -> str:
    init_state()
    return st.session_state[LANG]


def get_arch_config() -> ResNetConfig:
    init_state()
    return ResNetConfig.from_dict(st.session_state[ARCH_CONFIG])


def set_arch_config(config: ResNetConfig) -> None:
    st.session_state[ARCH_CONFIG] = config.to_dict()


def get_schedule_json() -> str | None:
    """Return the schedule set on the Fine-tuning page, or None when the user has not set one."""
    init_state()
    return st.session_state[SCHEDULE_JSON]


def set_schedule_json(schedule_json: str) -> None:
    st.session_state[SCHEDULE_JSON] = schedule_json


# Widgets whose values a student expects to find again after visiting another page. Streamlit
# drops a widget's value at the end of any run that does not draw it, so the runs of the other
# pages copy these values into session state, which keeps them. Only settable widgets belong
# here: no uploaders, buttons, data editors, charts, or pickers of runs that may be deleted.
KEPT_WIDGETS: dict[str, tuple[str, ...]] = {
    "grad": ("grad_section", "grad_family", "grad_block", "grad_use_arch", "grad_depth_*", "grad_input_size_*",
             "grad_batch_size", "grad_data", "grad_batch_norm", "grad_init", "grad_steps", "grad_lr", "grad_seed",
             "grad_shown", "grad_points", "grad_preset"),
    "tta": ("tta_model_source", "tta_run_images_*", "tta_imagenet_depth", "tta_checkpoint_size", "tta_checkpoint_norm",
            "tta_image_source", "tta_samples", "tta_families", "tta_merge", "tta_topk", "tta_eval_source",
            "tta_eval_limit"),
    "train": ("train_epochs", "train_batch_size", "train_clip", "train_smoothing", "train_early", "train_monitor",
              "train_patience", "train_min_delta", "train_amp", "train_channels_last", "train_run_name",
              "train_data_source", "train_data_folder", "train_data_cifar_download", "train_data_val",
              "train_data_seed", "train_data_cap", "train_data_classes", "train_prep_size", "train_prep_resize",
              "train_prep_gray", "train_prep_norm", "train_weights_kind", "train_weights_imagenet"),
    "glossary": ("glossary_query",),
}


def keep_widgets_of_other_pages(page: str) -> None:
    """Copy the kept widget values of every page except `page` (whose run draws its own)."""
    patterns = [pattern for owner, owned in KEPT_WIDGETS.items() if owner != page for pattern in owned]
    for key in list(st.session_state.keys()):
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            st.session_state[key] = st.session_state[key]
