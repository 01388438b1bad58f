"""The sharing graph of a run with per-task masks or task vectors (drawn on the Sharing graph page):
which tasks share what, as a picture where the Masks page's heatmap is a table; over the whole
network or one layer, with the groups that community detection finds coloured and listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from analysis.overlap import intersections, pairwise_overlap
from analysis.task_graph import (ALL_PAIRS, NEIGHBOURS, group_summary, strongest_edges, task_graph, task_groups,
                                 task_positions)
from app.layout import chart
from app.schemes import view_of
from app.state import checked_routing_at, opened_at, overlap_of, run_stamp
from lsmn_core.errors import LsmnError
from lsmn_core.store.runs import Run

MOST_EDGES = 300  # the strongest edges drawn; the rest are counted in the caption
NAMED_TASKS = 30  # up to this many tasks are named beside their node; past it, on hover, and groups by label
OVERLAP = "overlap of their masks"
WHOLE = "the whole network"


@st.cache_data(show_spinner=False, max_entries=64)
def _layer_overlap(run_path: str, stamp: float, layer: int) -> list[list[float]]:
    """Pairwise overlap ratio of the masks of one layer's weights."""
    layers = opened_at(run_path, stamp).mask_layers()
    masks = checked_routing_at(run_path, stamp)[2]
    return pairwise_overlap(intersections({n: m for n, m in masks.items() if layers[n] == layer})).tolist()


def _overlap(run: Run, where: str) -> np.ndarray:
    if where == WHOLE:
        return np.asarray(overlap_of(run)["pairwise"])
    return np.asarray(_layer_overlap(str(run.path), run_stamp(run), int(where.removeprefix("layer "))))


def _edge_traces(edges: list[tuple[str, str, float]], positions: dict, strongest: float) -> list[go.Scatter]:
    """Edges in three widths by size (plotly draws one width per trace); pulling against each other
    (negative) dashed red; a hover point at each edge's middle names the pair and the value."""
    traces = []
    for sign, colour, dash in ((1, "rgba(70, 100, 160, {})", "solid"), (-1, "rgba(200, 50, 50, {})", "dash")):
        chosen = [e for e in edges if np.sign(e[2]) == sign]
        for low, high, width in ((0, 1 / 3, 1), (1 / 3, 2 / 3, 2.5), (2 / 3, 1.01, 4.5)):
            band = [e for e in chosen if low <= abs(e[2]) / strongest < high]
            if not band:
                continue
            xs, ys = [], []
            for a, b, _ in band:
                xs += [positions[a][0], positions[b][0], None]
                ys += [positions[a][1], positions[b][1], None]
            traces.append(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                     line={"width": width, "color": colour.format(0.25 + 0.5 * high), "dash": dash}))
    traces.append(go.Scatter(
        x=[(positions[a][0] + positions[b][0]) / 2 for a, b, _ in edges],
        y=[(positions[a][1] + positions[b][1]) / 2 for a, b, _ in edges], mode="markers", showlegend=False,
        marker={"size": 8, "opacity": 0}, hovertemplate="%{text}<extra></extra>",
        text=[f"{a} · {b}: {w:.3f}" for a, b, w in edges]))
    return traces


def task_graph_figure(similarity: np.ndarray, names: list[str], weakest: float, measure: str,
                      where: str) -> tuple[go.Figure, list[list[str]]]:
    """The graph of the pairs at least `weakest` in size, laid out by what they share, each group of
    tasks a colour; and the groups."""
    graph = task_graph(similarity, names, weakest)
    groups, positions = task_groups(graph), task_positions(graph)
    edges = strongest_edges(graph, MOST_EDGES)
    strongest = max((abs(w) for _, _, w in edges), default=1.0)
    figure = go.Figure(_edge_traces(edges, positions, strongest))
    named = len(names) <= NAMED_TASKS
    alone = [group[0] for group in groups if len(group) == 1]
    for number, group in enumerate([g for g in groups if len(g) > 1], start=1):
        colour = qualitative.Plotly[(number - 1) % len(qualitative.Plotly)]
        figure.add_trace(go.Scatter(
            x=[positions[t][0] for t in group], y=[positions[t][1] for t in group], text=group,
            mode="markers+text" if named else "markers", textposition="top center", textfont={"size": 13},
            name=f"group {number} "
            f"({len(group)} tasks)", marker={"size": 16 if named else 10, "color": colour, "line": {"width": 1}},
            hovertemplate=f"%{{text}} (group {number})<extra></extra>"))
        if not named:
            figure.add_annotation(x=float(np.mean([positions[t][0] for t in group])),
                                  y=float(np.mean([positions[t][1] for t in group])), text=f"<b>group {number}</b>",
                                  showarrow=False, font={"color": colour, "size": 14}, bgcolor="rgba(255,255,255,0.7)")
    if alone:
        figure.add_trace(go.Scatter(
            x=[positions[t][0] for t in alone], y=[positions[t][1] for t in alone], text=alone,
            mode="markers+text" if named else "markers", textposition="top center", textfont={"size": 13},
            name=f"on its own ({len(alone)})",
            marker={"size": 16 if named else 10, "color": "lightgrey", "line": {"width": 1}},
            hovertemplate="%{text} (in no group)<extra></extra>"))
    shown = f"the strongest {len(edges)} of {graph.number_of_edges()}" if len(edges) < graph.number_of_edges() \
        else f"all {len(edges)}"
    figure.update_layout(
        title=f"Which tasks share what: {measure} ({where})", height=720 if len(names) > NAMED_TASKS else 560,
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"}, legend={"title": "groups"},
        meta={"caption": (
            f"An edge for each pair of tasks whose {measure} is at least {weakest:.3f}"
            + (f", where one is among the other's {NEIGHBOURS} closest" if len(names) > ALL_PAIRS else "")
            + f" ({shown} drawn; thicker: "
            "stronger; dashed red: the pair pulls against each other). Tasks that share most are drawn side by "
            "side; a colour is a group that community detection (Louvain) finds among these edges.")})
    return figure, groups


def overlap_graph_section(run: Run) -> None:
    """Choose the measure, the layer and the weakest edge; draw the graph and list its groups."""
    names = run.task_names
    extra = view_of(run.scheme).pair_measures
    try:
        measures = extra(run) if extra else {}
    except LsmnError:  # no summary yet, or a damaged one (the Overview says which): the masks still draw
        measures = {}
    cols = st.columns([2, 2, 3])
    measure = cols[0].radio("Edges", [OVERLAP, *measures], key=f"graph_measure_{run.id}",
                            help="overlap: the weights both tasks' masks keep over those either keeps")
    if measure == OVERLAP:
        places = [WHOLE, *(f"layer {part['layer']}" for part in overlap_of(run)["per_layer"])]
    else:
        places = list(measures[measure])
    where = cols[1].selectbox("Over", places, key=f"graph_layer_{run.id}_{measure}")
    similarity = _overlap(run, where) if measure == OVERLAP else np.asarray(measures[measure][where], dtype=float)
    sizes = np.abs(similarity[np.triu_indices(len(names), 1)])
    low, high = (float(sizes.min()), float(sizes.max())) if sizes.size else (0.0, 1.0)
    if high - low < 1e-6:
        weakest = low
        cols[2].caption(f"Every pair has the same {measure} here, {low:.3f}: every edge is drawn.")
    else:
        weakest = cols[2].slider("Weakest edge drawn", low, high, low, step=(high - low) / 200, format="%.3f",
                                 key=f"graph_weakest_{run.id}_{measure}_{where}")
    figure, groups = task_graph_figure(similarity, names, weakest, measure, where)
    chart(st, figure, "task_graph")
    table = pd.DataFrame(group_summary(similarity, names, groups))
    st.dataframe(table, hide_index=True, column_config={
        "inside": st.column_config.NumberColumn(f"mean {measure.split(' of ')[0]} inside", format="%.3f"),
        "to the rest": st.column_config.NumberColumn("mean to the other tasks", format="%.3f")})
