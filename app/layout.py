"""Page layout: slots that adapt to the number of tasks, and figures drawn with their one-line explanation."""

import streamlit as st

from app.figures import MANY_TASKS


def task_columns(n_tasks: int) -> tuple:
    """Two side-by-side slots for per-task heatmaps, or two full-width ones when tasks are many."""
    return tuple(st.columns(2)) if n_tasks <= MANY_TASKS else (st.container(), st.container())


def chart(slot, figure, key: str) -> None:
    """Draw a figure of app.figures in `slot` (the page, a column) with its caption below it: what it
    shows, in one line (each figure function writes it into layout.meta)."""
    slot.plotly_chart(figure, key=key)
    slot.caption(figure.layout.meta["caption"])
