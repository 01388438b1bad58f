"""The hyper scheme (MUiR) in the app: the alignment (which hypermodule every block location uses)
and its search on the Overview; on the Sharing graph page the hypermodule - block - task graph, the
search over generations, and the subsets of tasks that share; an alignment editor; retraining the
block contexts alone."""

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.overlap import set_label
from analysis.sharing_graph import (hypermodule_users, sharing_graph, subset_proportions, task_clusters, task_graph,
                                    usage_counts)
from app.layout import chart
from app.figures import bar_chart, categorical_scale
from app.schemes.view import PageSection, SchemeView
from app.state import checked_routing_at, run_stamp


NODE_STYLE = {"task": ("#d62728", 18), "hypermodule": ("#1f77b4", 11), "block": ("#aaaaaa", 5)}


def log_axis(values: list[float]) -> dict:
    """A log axis ticked at 1, 2 and 5 times the powers of ten that the positive `values` span, each
    written in full: plotly's own log ticks write 0.5 and 5 alike, as a bare "5"."""
    positive = [v for v in values if v > 0]
    if not positive:
        return {"type": "log"}
    low, high = min(positive), max(positive)
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    below = max((t for t in ticks if t <= low), default=ticks[0])
    above = min((t for t in ticks if t >= high), default=ticks[-1])
    shown = [t for t in ticks if below <= t <= above]
    return {"type": "log", "tickvals": shown, "ticktext": [f"{t:g}" for t in shown]}


def alignment_heatmap(alignment: dict[str, list[int]], title: str) -> go.Figure:
    """Which hypermodule each task's block locations use (rows: tasks; blank where a task has fewer)."""
    tasks = list(alignment)
    width = max(len(v) for v in alignment.values())
    z = [v + [None] * (width - len(v)) for v in alignment.values()]
    hover = [[f"{t}, block {i}: H{k}" if k is not None else "" for i, k in enumerate(row)] for t, row in zip(tasks, z)]
    modules = 1 + max((k for row in z for k in row if k is not None), default=0)
    height = max(300, 160 + 22 * len(tasks))  # a few tasks: rows tall enough to see, a colour bar to name them
    figure = go.Figure(go.Heatmap(z=z, y=tasks, x=list(range(width)), hovertext=hover, hoverinfo="text",
                                  **categorical_scale(modules, "hypermodule", "H", height)))
    ticks = list(range(0, width, max(1, math.ceil(width / 30))))  # whole block locations only, never 0.5
    figure.update_layout(title=title, xaxis={"title": "block location", "tickvals": ticks},
                         yaxis={"autorange": "reversed"}, height=height, meta={"caption": (
                             "The hypermodule each block location of each task draws its weights from, one colour "
                             "per hypermodule: tasks with the same colours share those weights.")})
    return figure


def network_figure(graph, title: str, caption: str, seed: int = 0) -> go.Figure:
    """A networkx graph (nodes with "kind" and "label") drawn at its spring layout."""
    import networkx as nx

    pos = nx.spring_layout(graph, seed=seed, weight="weight")
    ex, ey = [], []
    for a, b in graph.edges:
        ex += [pos[a][0], pos[b][0], None]
        ey += [pos[a][1], pos[b][1], None]
    figure = go.Figure(go.Scatter(x=ex, y=ey, mode="lines", line={"width": 0.6, "color": "#bbbbbb"},
                                  hoverinfo="skip", showlegend=False))
    for kind, (color, size) in NODE_STYLE.items():
        nodes = [n for n, d in graph.nodes(data=True) if d["kind"] == kind]
        if not nodes:
            continue
        figure.add_trace(go.Scatter(
            x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes],
            mode="markers" if kind == "block" else "markers+text",
            name=kind,
            text=None if kind == "block" else [graph.nodes[n]["label"] for n in nodes], textposition="top center",
            hovertext=[f"{graph.nodes[n]['label']} · {graph.degree(n)} links" for n in nodes], hoverinfo="text",
            marker={"color": color, "size": size, "line": {"width": 0.5, "color": "white"}}))
    figure.update_layout(title=title, height=560, xaxis={"visible": False}, yaxis={"visible": False},
                         legend={"orientation": "h"}, meta={"caption": caption})
    return figure


def search_timeline(history: list[dict]) -> go.Figure:
    """Validation loss after each generation of the alignment search, and how many locations changed."""
    generations = [h["generation"] for h in history]
    losses = [h["dev_loss"] for h in history]
    figure = go.Figure(go.Bar(x=generations, y=[h["changed"] for h in history], name="locations changed",
                              marker_color="#c7c7c7", yaxis="y2"))
    figure.add_trace(go.Scatter(x=generations, y=losses, name="validation loss", mode="lines+markers"))
    figure.update_layout(title="Alignment search", xaxis={"title": "generation"},
                         yaxis={"title": "validation loss", **log_axis(losses)},
                         yaxis2={"title": "changed", "overlaying": "y", "side": "right", "showgrid": False,
                                 "tickmode": "auto", "tickformat": "d", "rangemode": "tozero"},
                         height=340, legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02,
                                             "yanchor": "bottom"}, meta={"caption": (
                             "The validation loss after each generation of the alignment search (line), and how "
                             "many block locations moved to another hypermodule in it (bars).")})
    return figure


@st.cache_data(show_spinner=False)
def _alignment(run_path: str, stamp: float) -> dict | None:
    doc = checked_routing_at(run_path, stamp)[0]
    return {k: doc[k] for k in ("alignment", "history", "hypermodules")} if "alignment" in doc else None


def alignment_of(run) -> dict | None:
    """The run's alignment, its search history and the number of hypermodules, cached per run state."""
    return _alignment(str(run.path), run_stamp(run))


def overview(run) -> bool:
    report = alignment_of(run)
    if report:
        left, right = st.columns([3, 2])
        chart(left, alignment_heatmap(report["alignment"], "Hypermodule of every block location"), "alignment")
        if len(report.get("history") or []) > 1:
            chart(right, search_timeline(report["history"]), "timeline")
    return bool(report)


def sharing_page(run, report) -> None:
    history = report.get("history") or []
    alignment = report["alignment"]
    if len(history) > 1:
        chart(st, search_timeline(history), "timeline")
        generation = st.slider("Alignment after generation", 0, len(history) - 1, len(history) - 1,
                               key=f"generation_{run.id}")
        if generation != len(history) - 1:
            alignment = history[generation]["alignment"]
    users = hypermodule_users(alignment)
    cols = st.columns(4)
    cols[0].metric("Block locations", sum(len(v) for v in alignment.values()))
    cols[1].metric("Hypermodules in use", f"{len(users)} of {report['hypermodules']}")
    cols[2].metric("Shared by 2+ tasks", sum(len(u) > 1 for u in users.values()))
    cols[3].metric("Task clusters", len(task_clusters(alignment)))

    chosen = st.multiselect("Tasks", run.task_names, default=run.task_names, key=f"graph_tasks_{run.id}")
    left, right = st.columns(2)
    show_blocks = left.toggle("Show every block", value=sum(len(alignment[t]) for t in chosen) <= 300,
                              key=f"graph_blocks_{run.id}")
    shared_only = right.toggle("Only hypermodules shared by 2+ tasks", value=False, key=f"graph_shared_{run.id}")
    if chosen:
        subset = {t: alignment[t] for t in chosen}
        graph = sharing_graph(subset, blocks=show_blocks)
        if shared_only:
            graph.remove_nodes_from([("hypermodule", k) for k, u in hypermodule_users(subset).items() if len(u) < 2])
            graph.remove_nodes_from([n for n, d in graph.nodes(data=True) if d["kind"] == "block"
                                     and graph.degree(n) < 2])
        chart(st, network_figure(graph, "Tasks, blocks and hypermodules", (
            "Tasks (red) linked to the hypermodules (blue, H<k>) their block locations (grey) draw weights from: "
            "tasks pulled together share hypermodules.")), "graph")
    chart(st, alignment_heatmap(alignment, "Hypermodule of every block location"), "alignment")

    left, right = st.columns(2)
    # distinct sets keep distinct labels: a long set is numbered and named by its count and first tasks
    proportions = {set_label(list(s)) if len(s) <= 4 else f"#{i + 1}: {set_label(list(s))}": p
                   for i, (s, p) in enumerate(subset_proportions(alignment).items())}
    chart(left, bar_chart(proportions, "Hypermodules used exclusively by each set of tasks",
                          "proportion of hypermodules in use", "tasks",
                          "Of the hypermodules in use, the share used by exactly that set of tasks and no other."),
          "subsets")
    chart(right, bar_chart({f"H{k}": n for k, n in usage_counts(alignment).items()},
                           "How often each hypermodule is used", "block locations", "hypermodule",
                           "How many block locations, over all tasks, draw their weights from each hypermodule."),
          "usage")
    shared = task_graph(alignment)
    st.subheader("Tasks that share")
    st.dataframe(pd.DataFrame([{"cluster": i, "tasks": ", ".join(c)}
                               for i, c in enumerate(task_clusters(alignment))]), hide_index=True)
    st.dataframe(pd.DataFrame([{"task": a, "with": b, "shared hypermodules": d["weight"]}
                               for a, b, d in shared.edges(data=True)]).sort_values("shared hypermodules",
                                                                                    ascending=False)
                 if shared.number_of_edges() else pd.DataFrame(columns=["task", "with", "shared hypermodules"]),
                 hide_index=True)


def alignment_editor(run, doc, arrays):
    tasks = run.task_names
    K = doc["hypermodules"]
    st.caption(f"The hypermodule (0..{K - 1}) each block location of each task draws its weights from. "
               "Point a task's blocks at another task's hypermodules to make them share.")
    rows = [(t, i) for t in tasks for i in range(len(doc["alignment"][t]))]
    table = pd.DataFrame({"task": [t for t, _ in rows], "block": [i for _, i in rows],
                          "hypermodule": [doc["alignment"][t][i] for t, i in rows]})
    edited = st.data_editor(table, key=f"alignment_{run.id}", hide_index=True, disabled=["task", "block"],
                            column_config={"hypermodule": st.column_config.NumberColumn(
                                "hypermodule", min_value=0, max_value=K - 1, step=1, required=True)})
    alignment = {t: [] for t in tasks}
    for t, k in zip(edited["task"], edited["hypermodule"]):
        alignment[t].append(int(k))
    return {**doc, "alignment": alignment}, arrays


VIEW = SchemeView(overview=overview, pages={"sharing": PageSection(alignment_of, sharing_page)},
                  editor=alignment_editor, retrain_modes=("all", "routing"), routing_help="only the block contexts")
