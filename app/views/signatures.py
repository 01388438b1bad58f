"""Signatures: the module order each task's signature picks at each layer, how sure it is, and how
similar tasks' signatures are (drawn by the run's scheme view)."""

import streamlit as st

from app.navigation import draw_scheme_section, run_for
from app.text import plain

run = run_for("signatures")
st.title(f"Signatures · {plain(run.name)}")
draw_scheme_section(run, "signatures")
