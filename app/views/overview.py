"""Overview of one run: per-task metrics, parameters, mask overlap, training curves, config."""

import pandas as pd
import streamlit as st

from app.figures import (alignment_heatmap, density_heatmap, expert_usage_heatmap, overlap_heatmap,
                         search_timeline, signature_heatmap, similarity_heatmap, training_curves)
from app.layout import task_columns
from app.state import current_run, overlap_of, sharing_of, signatures_of
from lsmn_core.errors import LsmnError
from lsmn_core.store import list_runs

run = current_run()
if run is None:
    st.stop()

st.title(run.name)
st.caption(f"{run.id} · scheme **{run.scheme}** · status **{run.status}** · created {run.meta.get('created', '?')} "
           f"· device {run.meta.get('device', '?')}")
try:
    summary = run.summary()
except LsmnError as exc:
    st.warning(str(exc))
    st.stop()

params = summary["params"]
cols = st.columns(3)
cols[0].metric("Total parameters", f"{params['total']:,}")
cols[1].metric("Shared by 2+ tasks", f"{params['shared']:,}")
cols[2].metric("Tasks", len(run.task_names))

table = pd.DataFrame([
    {"task": task, "metric": m["metric"], "dev": m["dev"], "test": m["test"],
     "active parameters": params["active"][task], "body density": summary["density"][task]}
    for task, m in summary["metrics"].items()])
baselines = [r for r in list_runs(run.path.parent)[0] if r.scheme in ("independent", "hard") and r.id != run.id
             and r.task_names == run.task_names and (r.path / "summary.json").is_file()]
for baseline in baselines:  # same tasks in the same folder: show the test metric beside this run's
    other = baseline.summary()["metrics"]
    table[f"test, {baseline.scheme} ({baseline.id})"] = [other[t]["test"] for t in table["task"]]
st.subheader("Tasks")
st.dataframe(table, hide_index=True, column_config={
    "dev": st.column_config.NumberColumn(format="%.4f"), "test": st.column_config.NumberColumn(format="%.4f"),
    "body density": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f")})

try:
    report, signatures, sharing = overlap_of(run), signatures_of(run), sharing_of(run)
except LsmnError as exc:
    st.error(f"Cannot read the run's routing: {exc}")
    report = signatures = sharing = None
if report:
    left, right = task_columns(len(run.task_names))
    left.plotly_chart(overlap_heatmap(report, run.task_names), key="overlap")
    right.plotly_chart(density_heatmap(report, run.task_names), key="density")
if signatures:
    left, right = st.columns([3, 2])
    left.plotly_chart(signature_heatmap(signatures), key="signatures")
    right.plotly_chart(similarity_heatmap(signatures), key="similarity")
gate_stats = summary.get("routing", {}).get("gate_stats")
if gate_stats:
    st.plotly_chart(expert_usage_heatmap(gate_stats), key="experts")
alignment = (sharing or {}).get("alignment")
if alignment:
    left, right = st.columns([3, 2])
    left.plotly_chart(alignment_heatmap(alignment, "Hypermodule of every block location"), key="alignment")
    if len(sharing.get("history") or []) > 1:
        right.plotly_chart(search_timeline(sharing["history"]), key="timeline")
if not report and not signatures and not gate_stats and not alignment:
    st.info(f"The {run.scheme} scheme has no per-task masks or signatures: every task uses its whole body.")

records = run.metrics()
if records:
    st.plotly_chart(training_curves(records), key="curves")
with st.expander("Config"):
    st.json(run.meta["config"])
