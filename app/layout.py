"""Page layout: slots that adapt to the number of tasks, and figures drawn with their one-line explanation."""

import textwrap

import streamlit as st

from app.figures import MANY_TASKS


def task_columns(n_tasks: int) -> tuple:
    """Two side-by-side slots for per-task heatmaps, or two full-width ones when tasks are many."""
    return tuple(st.columns(2)) if n_tasks <= MANY_TASKS else (st.container(), st.container())


TITLE_LINE = 46  # characters of a chart title's line that fit a half-width column on a 1280 px screen
TITLE_LINE_PX = 21  # a title line's height in the app's theme
TITLE_TOP_PX = 22  # where a wrapped title is anchored, below the chart's top edge
DEFAULT_HEIGHT = 450  # plotly's height of a figure that sets none


def wrap_title(figure) -> None:
    """Break a long title into lines that fit its chart (plotly cuts a title at the chart's edge), the
    plot pushed down by their height. Plotly draws a title of several lines about half a line above
    its anchor, and its automatic margin places such titles unevenly (cutting the first line off
    some charts), so the anchor and the top margin are set here, in pixels."""
    text = figure.layout.title.text
    if text and len(text) > TITLE_LINE and "<br>" not in text:
        lines = textwrap.wrap(text, TITLE_LINE)
        height = figure.layout.height or DEFAULT_HEIGHT
        figure.update_layout(title={"text": "<br>".join(lines), "yref": "container", "y": 1 - TITLE_TOP_PX / height,
                                    "yanchor": "top"}, margin={"t": TITLE_TOP_PX + TITLE_LINE_PX * len(lines)})


def chart(slot, figure, key: str) -> None:
    """Draw a figure of app.figures in `slot` (the page, a column) with its caption below it: what it
    shows, in one line (each figure function writes it into layout.meta); its title wrapped to fit."""
    wrap_title(figure)
    slot.plotly_chart(figure, key=key)
    slot.caption(figure.layout.meta["caption"])
