"""The soft scheme in the app: its cross-stitch weights (how much each task's column reads from the
others after each block), on the Overview and the Sharing graph page."""

import math

import plotly.graph_objects as go
import streamlit as st

from app.figures import cell_labels, task_rows_height
from app.layout import chart
from app.schemes.view import PageSection, SchemeView


def stitch_heatmap(stitches: dict, layer: int) -> go.Figure:
    """Soft sharing's cross-stitch units after one block: how much each task's column (row) reads
    from each task's column (column)."""
    tasks = list(stitches)
    z = [[stitches[reader][read][layer] for read in tasks] for reader in tasks]
    labels = cell_labels(len(tasks))
    figure = go.Figure(go.Heatmap(z=z, x=tasks, y=tasks, colorscale="RdBu", zmid=0,
                                  text=[[f"{v:.2f}" for v in row] for row in z] if labels else None,
                                  texttemplate=labels, colorbar={"title": "weight"},
                                  hovertemplate="%{y} reads %{x}: %{z:.3f}<extra></extra>"))
    figure.update_layout(title=f"Cross-stitch weights after block {layer}",
                         xaxis={"title": "column read"}, yaxis={"title": "task's column", "autorange": "reversed"},
                         height=task_rows_height(len(tasks)), meta={"caption": (
                             "Soft sharing: after this block each task's column becomes the weighted sum of every "
                             "column, with these learned weights (they start at the identity's neighbourhood: "
                             "a strong diagonal). Off-diagonal weight is what a task takes from the others.")})
    return figure


def stitches_of(run) -> dict | None:
    """{reader task: {read task: [weight per block]}}, or None when the summary does not hold a
    complete, finite square of them."""
    stitches = run.summary().get("routing", {}).get("stitches")
    if not isinstance(stitches, dict) or not stitches:
        return None
    tasks = set(stitches)
    rows = list(stitches.values())
    if not all(isinstance(row, dict) and set(row) == tasks for row in rows):
        return None
    weights = [w for row in rows for w in row.values()]
    depth = len(weights[0]) if isinstance(weights[0], list) else 0
    if depth == 0 or not all(isinstance(w, list) and len(w) == depth and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in w) for w in weights):
        return None
    return stitches


def show_stitches(run, stitches: dict) -> None:
    depth = len(next(iter(next(iter(stitches.values())).values())))
    layer = st.slider("Block", 0, depth - 1, depth - 1, key=f"stitch_layer_{run.id}") if depth > 1 else 0
    chart(st, stitch_heatmap(stitches, layer), "stitches")


def overview(run) -> bool:
    stitches = stitches_of(run)
    if stitches:
        show_stitches(run, stitches)
    return bool(stitches)


VIEW = SchemeView(overview=overview, pages={"sharing": PageSection(stitches_of, show_stitches)})
