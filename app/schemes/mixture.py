"""The mixture scheme in the app: signatures (template per layer, confidence, similarity) on the
Overview and on the Signatures page, a module-order editor, and retraining the signatures alone."""

import pandas as pd
import streamlit as st

from analysis.signatures import signature_report
from app.layout import chart
from app.figures import mixture_weights_chart, signature_heatmap, similarity_heatmap
from app.schemes.view import PageSection, SchemeView
from app.state import checked_routing_at, checked_routing_of, run_stamp


@st.cache_data(show_spinner=False)
def _signatures(run_path: str, stamp: float) -> dict | None:
    doc = checked_routing_at(run_path, stamp)[0]
    return signature_report(doc["signatures"]) if "signatures" in doc else None


def signatures_of(run) -> dict | None:
    """The run's signature report, cached per run state."""
    return _signatures(str(run.path), run_stamp(run))


def overview(run) -> bool:
    report = signatures_of(run)
    if report:
        left, right = st.columns([3, 2])
        chart(left, signature_heatmap(report), "signatures")
        chart(right, similarity_heatmap(report), "similarity")
    return bool(report)


def signatures_page(run, report) -> None:
    chart(st, signature_heatmap(report), "signatures")
    rows = [{"task": t, "module order": " ".join(map(str, r["order"])), "progressive": r["progressive"],
             "mean confidence": sum(r["confidence"]) / len(r["confidence"]),
             "runs": " ".join(f"{k}x{n}" for k, n in r["runs"])} for t, r in report["tasks"].items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption("Module order: the template of largest weight at each layer. Runs: that order run-length encoded, "
               "template x layers in a row (3x3 1x5: template 3 for three layers, then template 1 for five). "
               "Progressive: each template in one unbroken run, the runs never shorter with depth. Mean "
               "confidence: the largest mixture weight, averaged over layers.")
    left, right = st.columns(2)
    task = left.selectbox("Task", report["task_names"], key=f"signature_task_{run.id}")
    doc = checked_routing_of(run)[0]
    chart(left, mixture_weights_chart(doc["signatures"][task], task), "weights")
    chart(right, similarity_heatmap(report), "similarity")
    st.subheader("Tasks sharing a template, per layer")
    st.dataframe(pd.DataFrame([
        {"layer": layer["layer"], "shared by all": layer["shared_by_all"],
         "groups": " | ".join(f"{k}: {', '.join(ts)}" for k, ts in layer["groups"].items())}
        for layer in report["shared_layers"]]), hide_index=True)


def signature_editor(run, doc, arrays):
    tasks = run.task_names
    orders = {t: [max(range(len(w)), key=w.__getitem__) for w in doc["signatures"][t]] for t in tasks}
    depth = len(next(iter(orders.values())))
    st.caption(f"Module order: the template (0..{doc['templates'] - 1}) each task uses at each layer. "
               "Unchanged rows keep their learned mixture weights.")
    table = pd.DataFrame({f"layer {l}": [orders[t][l] for t in tasks] for l in range(depth)}, index=tasks)
    edited = st.data_editor(table, key=f"orders_{run.id}", column_config={
        c: st.column_config.NumberColumn(c, min_value=0, max_value=doc["templates"] - 1, step=1)
        for c in table.columns})
    signatures = dict(doc["signatures"])
    for t in tasks:
        order = [int(v) for v in edited.loc[t]]
        if order != orders[t]:
            signatures[t] = order
    return {**doc, "signatures": signatures}, arrays


VIEW = SchemeView(overview=overview, pages={"signatures": PageSection(signatures_of, signatures_page)},
                  editor=signature_editor, retrain_modes=("all", "routing"), routing_help="only the signatures")
