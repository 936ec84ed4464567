"""Cached network summaries, shared by the Arquitectura page and bench/bench_summary_cache.py.

The cache is keyed on the config dict, so switching between the page's views, or going back to a
config seen before, reuses the summary instead of building the network again.
"""

from __future__ import annotations

import streamlit as st

from core.models import ResNetConfig
from core.summary import ModelSummary, summarize_config

# Each entry is a few hundred small rows; 64 configs stay well under a few megabytes.
MAX_CACHED_SUMMARIES = 64


@st.cache_data(max_entries=MAX_CACHED_SUMMARIES, show_spinner=False)
def cached_summary(config_dict: dict) -> ModelSummary:
    """Return the summary of the config in `config_dict` (ResNetConfig.to_dict()); LabError if invalid."""
    return summarize_config(ResNetConfig.from_dict(config_dict))
