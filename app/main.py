"""LSMN Studio: `streamlit run app/main.py`. Opens on the shipped sample runs; no training needed."""

import os
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `app`, `lsmn_core`, `analysis` import

from app.navigation import navigation  # noqa: E402 (after the checkout is on the path)
from app.schemes import plugin_failures  # noqa: E402
from app.text import plain  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

st.set_page_config(page_title="LSMN Studio", layout="wide")
address = st.get_option("server.address") or "every interface"
if address not in LOOPBACK and os.environ.get("LSMN_ALLOW_REMOTE") != "1":
    # A single-user local tool: no login, and the runs-folder box reads any folder the user can.
    st.error(f"LSMN Studio is bound to {address}, where anyone who can reach it may read your files. It serves "
             "127.0.0.1 only; to serve another address anyway, start it with LSMN_ALLOW_REMOTE=1.")
    st.stop()
for line in plugin_failures():  # a broken plugin never stops the app: the rest works, and this says what is missing
    st.sidebar.warning(f"Plugin not loaded: {plain(line)}")
navigation().run()
