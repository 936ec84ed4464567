"""ResNet Lab: entry point. Sets up shared state and the navigation over pages/.

Run with `./start.sh` (or `streamlit run app.py` inside the virtual environment).
"""

import streamlit as st

from ui import state
from ui.common import translator

PAGES = (
    ("pages/home.py", "common.nav_home", ":material/home:"),
    ("pages/architecture.py", "common.nav_architecture", ":material/account_tree:"),
    ("pages/gradients.py", "common.nav_gradients", ":material/trending_down:"),
    ("pages/finetuning.py", "common.nav_finetuning", ":material/tune:"),
    ("pages/training.py", "common.nav_training", ":material/model_training:"),
    ("pages/tta.py", "common.nav_tta", ":material/flip:"),
    ("pages/glossary.py", "common.nav_glossary", ":material/menu_book:"),
)

state.init_state()
t = translator()
navigation = st.navigation(
    [
        st.Page(path, title=t(title_key), icon=icon, default=(index == 0))
        for index, (path, title_key, icon) in enumerate(PAGES)
    ]
)
navigation.run()
