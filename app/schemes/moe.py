"""The moe scheme in the app: expert usage per task and layer (gathered at the final evaluation)
on the Overview and the Sharing graph page, and an editor of the experts each task may use."""

import pandas as pd
import streamlit as st

from app.layout import chart
from app.figures import expert_usage_heatmap
from app.schemes.view import PageSection, SchemeView


def gate_stats_of(run) -> dict | None:
    """Per task: each layer's share of samples sent to each expert, gate entropy and overflow."""
    return run.summary().get("routing", {}).get("gate_stats")


def overview(run) -> bool:
    gate_stats = gate_stats_of(run)
    if gate_stats:
        chart(st, expert_usage_heatmap(gate_stats), "experts")
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


VIEW = SchemeView(overview=overview, editor=expert_editor, pages={"sharing": PageSection(
    gate_stats_of, lambda run, gate_stats: chart(st, expert_usage_heatmap(gate_stats), "experts"))})
