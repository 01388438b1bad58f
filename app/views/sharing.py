"""Sharing graph: which tasks share what, as a picture. Runs with per-task masks (or task vectors)
draw their tasks as a graph of overlap; hypermodules, experts and stitches are drawn by the run's
scheme view."""

import streamlit as st

from app.navigation import draw_scheme_section, has_masks, run_for
from app.overlap_graph import overlap_graph_section
from app.state import drawn_safely
from app.text import plain
from lsmn_core.errors import LsmnError

run = run_for("sharing")
st.title(f"Sharing graph · {plain(run.name)}")
draw_scheme_section(run, "sharing")
if has_masks(run):
    try:
        drawn_safely("the sharing graph", overlap_graph_section, run)
    except LsmnError as exc:
        st.error(f"Cannot read the run's routing: {plain(exc)}")
