"""Home: what the lab is, the path through it for one class, and the environment panel."""

import pandas as pd
import streamlit as st

from core.environment import environment_report
from ui.common import page_link, page_setup

t = page_setup("home.title")

st.title(t("home.title"))
st.markdown(t("home.intro"))

st.header(t("home.path_header"))
LESSON = (
    ("pages/architecture.py", "home.step_architecture", 10),
    ("pages/gradients.py", "home.step_gradients", 10),
    ("pages/finetuning.py", "home.step_finetuning", 10),
    ("pages/training.py", "home.step_training", 15),
    ("pages/tta.py", "home.step_tta", 5),
    ("pages/glossary.py", "home.step_glossary", 5),
)
for number, (page, key, minutes) in enumerate(LESSON, start=1):
    page_link(page, t(key + "_title", n=number, minutes=minutes))
    st.caption(t(key))
st.caption(t("home.path_total", minutes=sum(minutes for _, _, minutes in LESSON)))

st.header(t("home.env_header"))
report = environment_report()
device = report["device"]
columns = st.columns(3)
columns[0].metric(t("home.env_torch"), report["versions"]["torch"])
columns[1].metric(t("home.env_torchvision"), report["versions"]["torchvision"])
if device["kind"] == "cuda":
    columns[2].metric(t("home.env_device"), device["name"])
    st.caption(t("home.env_cuda", name=device["name"], memory=device["memory_gib"]))
elif device["kind"] == "mps":
    columns[2].metric(t("home.env_device"), t("home.mps"))
    st.caption(t("home.env_mps"))
else:
    columns[2].metric(t("home.env_device"), t("home.cpu"))
    threads = t("home.threads_one") if device["threads"] == 1 else t("home.threads_many", n=device["threads"])
    st.caption(t("home.env_cpu", threads=threads))

st.subheader(t("home.weights_header"))
weights = report["weights"]
table = pd.DataFrame(
    {
        t("home.weights_model"): [w.model for w in weights],
        t("home.weights_name"): [w.weights for w in weights],
        t("home.weights_file"): [w.file_name for w in weights],
        t("home.weights_cached"): [t("home.yes") if w.cached else t("home.no") for w in weights],
    }
)
st.dataframe(table, hide_index=True, width="stretch")
cached = sum(w.cached for w in weights)
folder = str(weights[0].path.parent) if weights else ""
st.caption(t("home.weights_summary", cached=cached, total=len(weights), folder=folder))
