"""The moe scheme in the app: expert usage per task and layer (gathered at the final evaluation)
and how specialised each layer's experts are, on the Overview and the Sharing graph page, and an
editor of the experts each task may use."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.figures import bar_chart
from app.layout import chart
from app.schemes.view import PageSection, SchemeView
from lsmn_core.schemes.moe.gates import specialisation


def expert_usage_heatmap(gate_stats: dict) -> go.Figure:
    """Share of each task's samples routed to each expert, per layer (rows: task · layer)."""
    rows, z, hover = [], [], []
    for task, stats in gate_stats.items():
        for layer, usage in enumerate(stats["usage"]):
            rows.append(f"{task} · layer {layer}")
            z.append(usage)
            hover.append([f"{task}, layer {layer}, expert {e}: {u:.1%} of samples<br>gate entropy "
                          f"{stats['entropy'][layer]:.2f}, overflow {stats['overflow'][layer]:.1%}"
                          for e, u in enumerate(usage)])
    figure = go.Figure(go.Heatmap(z=z, x=[f"expert {e}" for e in range(len(z[0]))], y=rows, zmin=0, zmax=1,
                                  colorscale="Blues", text=[[f"{v:.2f}" for v in r] for r in z],
                                  texttemplate="%{text}", hovertext=hover, hoverinfo="text"))
    figure.update_layout(title="Expert usage per task and layer", yaxis={"autorange": "reversed"},
                         height=140 + 26 * len(rows), meta={"caption": (
                             "The share of each task's samples that the gate sends to each expert, per layer: "
                             "an even row is a task that uses every expert alike, a dark cell an expert it relies "
                             "on.")})
    return figure


def gate_stats_of(run) -> dict | None:
    """Per task: each layer's share of samples sent to each expert, gate entropy and overflow."""
    return run.summary().get("routing", {}).get("gate_stats")


def show_experts(run, gate_stats: dict) -> None:
    chart(st, expert_usage_heatmap(gate_stats), "experts")
    per_layer = {f"layer {layer}": value for layer, value in enumerate(specialisation(gate_stats))}
    figure = bar_chart(per_layer, "Expert specialisation per layer", "normalised mutual information", "",
                       "The normalised mutual information between a sample's task and the experts it is sent to: "
                       "0 when every task spreads over the experts alike (balanced, not specialised), higher as "
                       "tasks keep to experts of their own (with top-k above 1 it stays below 1).")
    figure.update_xaxes(range=[0, 1])  # on its whole scale: a balanced run's 0.0005 is not a long bar
    figure.update_traces(texttemplate="%{x:.3f}", textposition="outside")
    chart(st, figure, "specialisation")


def overview(run) -> bool:
    gate_stats = gate_stats_of(run)
    if gate_stats:
        show_experts(run, gate_stats)
    return bool(gate_stats)


def expert_editor(run, doc, arrays):
    tasks = run.task_names
    st.caption("Tick the experts each task may use at each layer (at least one per layer).")
    rows = [(t, l) for t in tasks for l in range(len(doc["allowed"][t]))]
    table = pd.DataFrame([doc["allowed"][t][l] for t, l in rows], index=[f"{t} · layer {l}" for t, l in rows],
                         columns=[f"expert {e}" for e in range(doc["experts"])])
    edited = st.data_editor(table, key=f"allowed_{run.id}")
    allowed = {t: [[bool(v) for v in edited.loc[f"{t} · layer {l}"]] for l in range(len(doc["allowed"][t]))]
               for t in tasks}
    return {**doc, "allowed": allowed}, arrays


VIEW = SchemeView(overview=overview, editor=expert_editor, pages={"sharing": PageSection(gate_stats_of, show_experts)})
