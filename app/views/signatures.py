"""Signatures of a compositional (mixture) run: module order per task, confidence, similarity."""

import pandas as pd
import streamlit as st

from app.figures import mixture_weights_chart, signature_heatmap, similarity_heatmap
from app.state import checked_routing_of, run_with_report, signatures_of

run, report = run_with_report("Signatures", signatures_of, "signatures. Pick a mixture run in the sidebar")

st.plotly_chart(signature_heatmap(report), key="signatures")
rows = [{"task": t, "module order": " ".join(map(str, r["order"])), "progressive": r["progressive"],
         "mean confidence": sum(r["confidence"]) / len(r["confidence"]),
         "runs": " ".join(f"{k}x{n}" for k, n in r["runs"])} for t, r in report["tasks"].items()]
st.dataframe(pd.DataFrame(rows), hide_index=True)
left, right = st.columns(2)
task = left.selectbox("Task", report["task_names"], key=f"signature_task_{run.id}")
doc = checked_routing_of(run)[0]
left.plotly_chart(mixture_weights_chart(doc["signatures"][task], task), key="weights")
right.plotly_chart(similarity_heatmap(report), key="similarity")
st.subheader("Tasks sharing a template, per layer")
st.dataframe(pd.DataFrame([
    {"layer": layer["layer"], "shared by all": layer["shared_by_all"],
     "groups": " | ".join(f"{k}: {', '.join(ts)}" for k, ts in layer["groups"].items())}
    for layer in report["shared_layers"]]), hide_index=True)
