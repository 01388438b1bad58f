"""An app view: an app.schemes.view.SchemeView that says what the scheme adds to the app's pages:
figures on the Overview, sections of the Signatures or Sharing graph pages, a routing editor for
the Edit page, and what retraining may train. A scheme without a view still gets every generic
page (metrics, curves, masks where it has them, attributions).

The task_gains scheme's view: its gains as a heatmap on the Overview, and an editor of them.
"""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.layout import chart
from app.schemes.view import SchemeView


def gains_heatmap(gains: dict) -> go.Figure:
    tasks = list(gains)
    figure = go.Figure(go.Heatmap(z=[gains[t] for t in tasks], y=tasks, colorscale="Viridis",
                                  x=[f"block {b}" for b in range(len(gains[tasks[0]]))], colorbar={"title": "gain"}))
    figure.update_layout(title="Gain of each task on each block's update", yaxis={"autorange": "reversed"},
                         meta={"caption": "Each cell scales what a block adds to a task's activations: near 0 the "
                                          "task skips the block, above 1 it leans on it."})
    return figure


def overview(run) -> bool:
    gains = run.summary().get("routing", {}).get("gains")
    if isinstance(gains, dict) and gains:
        chart(st, gains_heatmap(gains), "gains")
    return bool(gains)


def gains_editor(run, doc, arrays):
    st.caption("Each task's gain on each block: 0 makes the task skip the block.")
    table = pd.DataFrame(doc["gains"]).T
    table.columns = [f"block {b}" for b in table.columns]
    edited = st.data_editor(table, key=f"gains_{run.id}")
    return {**doc, "gains": {t: [float(v) for v in edited.loc[t]] for t in run.task_names}}, arrays


VIEW = SchemeView(overview=overview, editor=gains_editor, retrain_modes=("all", "routing"),
                  routing_help="only the gains")
