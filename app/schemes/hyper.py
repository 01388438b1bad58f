"""The hyper scheme (MUiR) in the app: the alignment (which hypermodule every block location uses)
and its search on the Overview; on the Sharing graph page the hypermodule - block - task graph, the
search over generations, and the subsets of tasks that share; an alignment editor; retraining the
block contexts alone."""

import pandas as pd
import streamlit as st

from analysis.overlap import set_label
from analysis.sharing_graph import (hypermodule_users, sharing_graph, subset_proportions, task_clusters, task_graph,
                                    usage_counts)
from app.layout import chart
from app.figures import alignment_heatmap, bar_chart, network_figure, search_timeline
from app.schemes.view import PageSection, SchemeView
from app.state import checked_routing_at, run_stamp


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
