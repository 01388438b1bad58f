"""Page layout that adapts to the number of tasks."""

import streamlit as st

from app.figures import MANY_TASKS


def task_columns(n_tasks: int) -> tuple:
    """Two side-by-side slots for per-task heatmaps, or two full-width ones when tasks are many."""
    return tuple(st.columns(2)) if n_tasks <= MANY_TASKS else (st.container(), st.container())
