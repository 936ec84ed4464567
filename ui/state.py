"""Per-session state shared by the pages, initialised in one idempotent call.

Everything lives in `st.session_state`, so each browser session has its own settings and no
session can see or change another's. Module-level variables here would be shared by every
user of the server, so there are none.
"""

from __future__ import annotations

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

