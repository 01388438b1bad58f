"""Page layout: slots that adapt to the number of tasks, and figures drawn with their one-line explanation."""

import textwrap

import streamlit as st

from app.figures import MANY_TASKS


def task_columns(n_tasks: int) -> tuple:
    """Two side-by-side slots for per-task heatmaps, or two full-width ones when tasks are many."""
    return tuple(st.columns(2)) if n_tasks <= MANY_TASKS else (st.container(), st.container())


TITLE_LINE = 46  # characters of a chart title's line that fit a half-width column on a 1280 px screen
TITLE_LINE_PX = 16  # a title line's height in the app's theme
DEFAULT_HEIGHT = 450  # plotly's height of a figure that sets none


def wrap_title(figure) -> None:
    """Break a long title into lines that fit its chart (plotly cuts a title at the chart's edge), the
    plot pushed down to make room for them. Plotly anchors a title of several lines by its last line,
    so the title goes down a line's height for each line above it (else the first is cut off; the
    app's theme replaces a title's padding, so the shift is in its position)."""
    text = figure.layout.title.text
    if text and len(text) > TITLE_LINE and "<br>" not in text:
        lines = textwrap.wrap(text, TITLE_LINE)
        top = 1 - (6 + TITLE_LINE_PX * (len(lines) - 1)) / (figure.layout.height or DEFAULT_HEIGHT)
        figure.update_layout(title={"text": "<br>".join(lines), "automargin": True, "yref": "container", "y": top,
                                    "yanchor": "top"})


def chart(slot, figure, key: str) -> None:
    """Draw a figure of app.figures in `slot` (the page, a column) with its caption below it: what it
    shows, in one line (each figure function writes it into layout.meta); its title wrapped to fit."""
    wrap_title(figure)
    slot.plotly_chart(figure, key=key)
    slot.caption(figure.layout.meta["caption"])
