"""The sparse scheme in the app: its masks are drawn by the generic Masks page; the Overview shows
the IMP rounds each task's mask was chosen from (so a task that kept every weight says why); its
routing is edited mask by mask."""

import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from app.layout import chart
from app.mask_editor import mask_editor
from app.schemes.view import SchemeView

ROUND_LINES = 12  # tasks drawn as lines of rounds; past this, the figure says how many it leaves out
TICKS = [1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]  # densities named on the log axis


def pruning_rounds_figure(pruning: dict) -> go.Figure:
    """Per task: the dev metric after each IMP round against the round's density, the chosen round starred."""
    figure = go.Figure()
    tasks = list(pruning)[:ROUND_LINES]
    for index, task in enumerate(tasks):
        rounds = pruning[task]["rounds"]
        chosen = next((r for r in rounds if r["round"] == pruning[task]["chosen"]), None)
        colour = qualitative.Plotly[index % len(qualitative.Plotly)]  # the task's line and its star alike
        figure.add_trace(go.Scatter(
            x=[r["density"] for r in rounds], y=[r["dev"] for r in rounds], mode="lines+markers", name=task,
            legendgroup=task, text=[r["round"] for r in rounds], line={"color": colour},
            hovertemplate=f"{task}, round %{{text}}: density %{{x:.3f}}, dev %{{y:.4f}}<extra></extra>"))
        if chosen is not None:
            figure.add_trace(go.Scatter(x=[chosen["density"]], y=[chosen["dev"]], mode="markers", legendgroup=task,
                                        showlegend=False, marker={"symbol": "star", "size": 15, "color": colour},
                                        hovertemplate=f"{task}: its mask, round {chosen['round']}<extra></extra>"))
    left_out = f" The first {ROUND_LINES} of {len(pruning)} tasks are drawn." if len(pruning) > ROUND_LINES else ""
    figure.update_layout(
        title="IMP rounds: each task's dev metric as it was pruned", height=380,
        xaxis={"title": "density of the task's subnetwork", "type": "log", "autorange": "reversed",
               "tickvals": TICKS, "ticktext": [f"{t:g}" for t in TICKS]},
        yaxis={"title": "dev metric"}, meta={"caption": (
            "Iterative magnitude pruning trained each task, pruned its smallest weights and rewound, round after "
            "round (left to right: fewer weights); the task keeps the mask of its best round on dev (star). A "
            "star at density 1 means no pruned round did better: the task keeps every weight." + left_out)})
    return figure


def overview(run) -> bool:
    pruning = run.summary().get("search", {}).get("pruning")
    if pruning:
        chart(st, pruning_rounds_figure(pruning), "pruning_rounds")
    return bool(pruning)


VIEW = SchemeView(overview=overview, editor=mask_editor)
