"""LSMN Studio: `streamlit run app/main.py`. Opens on the shipped sample runs; no training needed."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `app`, `lsmn_core`, `analysis` import

st.set_page_config(page_title="LSMN Studio", layout="wide")
page = st.navigation([
    st.Page("pages/overview.py", title="Overview", default=True),
    st.Page("pages/masks.py", title="Masks and overlap"),
    st.Page("pages/signatures.py", title="Signatures"),
    st.Page("pages/compare.py", title="Compare"),
])
page.run()
