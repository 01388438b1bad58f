"""Compare runs side by side: per-task metrics, parameters, overlap matrices."""

import pandas as pd
import streamlit as st

from analysis.compare import comparison_rows
from app.layout import chart
from app.figures import overlap_heatmap
from app.state import listed_runs, overlap_of
from app.text import plain
from lsmn_core.errors import LsmnError

st.title("Compare runs")
runs = listed_runs()
finished = {r.id: r for r in runs if (r.path / "summary.json").is_file()}
if len(finished) < 2:
    st.info("Compare needs at least two finished runs in the runs folder.")
    st.stop()
selected_run = next((r for r in finished.values() if str(r.path) == st.session_state.get("run_path")), None)
same_tasks = sorted((i for i, r in finished.items() if selected_run and r.same_tasks(selected_run)),
                    key=lambda i: finished[i] is not selected_run)  # the sidebar run first: changes are against it
default = same_tasks[:4] if len(same_tasks) >= 2 else list(finished)[:3]  # the sidebar run's task set first
chosen = st.multiselect("Runs", list(finished), default=default, key="compare_runs")
st.caption("Defaults to the runs that share the sidebar run's tasks; changes are against the first run picked.")
if len(chosen) < 2:
    st.info("Pick two or more runs.")
    st.stop()
selected = [finished[i] for i in chosen]
try:
    rows = comparison_rows(selected)
except LsmnError as exc:
    st.error(plain(exc))
    st.stop()
first = chosen[0]
table = pd.DataFrame([{"task": r["task"], "metric": r["metric"],
                       **{f"{i} test": r[i]["test"] for i in chosen if i in r},
                       **{f"{i} change": r[i]["test"] - r[first]["test"] for i in chosen[1:] if i in r and first in r}}
                      for r in rows])
st.subheader("Test metric per task")
st.dataframe(table, hide_index=True)
counts = {r.id: r.summary()["params"] for r in selected}
params = pd.DataFrame([{"run": r.id, "scheme": r.scheme, "total": counts[r.id]["total"],
                        "shared by 2+ tasks": counts[r.id]["shared"],
                        **{f"active: {t}": n for t, n in counts[r.id]["active"].items()}}
                       for r in selected])
st.subheader("Parameters")
st.dataframe(params, hide_index=True)
overlaps = []
for r in selected:
    try:
        overlaps.append((r, overlap_of(r)))
    except LsmnError as exc:  # one damaged run's routing: said, and the others still drawn
        st.warning(f"No overlap for {plain(r.id)}: {plain(exc)}")
masked = [(r, report) for r, report in overlaps if report]
if masked:
    st.subheader("Mask overlap")
    for column, (run, report) in zip(st.columns(len(masked)), masked):
        chart(column, overlap_heatmap(report, run.task_names), f"overlap_{run.id}")
