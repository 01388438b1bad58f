"""The mixture scheme in the app: signatures (template per layer, confidence, similarity) on the
Overview and on the Signatures page, a module-order editor, and retraining the signatures alone."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lsmn_core.schemes.mixture.signatures import signature_report
from app.layout import chart
from app.figures import categorical_scale, index_colour
from app.schemes.view import PageSection, SchemeView
from app.state import checked_routing_at, checked_routing_of, run_stamp


def signature_heatmap(report: dict) -> go.Figure:
    """Task x layer: the template each task uses (colour) and how sure it is (cell text, hover)."""
    tasks = report["task_names"]
    rows = [report["tasks"][t] for t in tasks]
    depth = len(rows[0]["order"])
    text = [[f"{r['order'][l]}<br>{r['confidence'][l]:.2f}" for l in range(depth)] for r in rows]
    hover = [[f"{t}, layer {l}: template {r['order'][l]} (weight {r['confidence'][l]:.3f}, "
              f"entropy {r['entropy'][l]:.2f})" for l in range(depth)] for t, r in zip(tasks, rows)]
    labels = [f"{t} ★" if r["progressive"] else t for t, r in zip(tasks, rows)]
    height = 140 + 50 * len(tasks)
    figure = go.Figure(go.Heatmap(
        z=[r["order"] for r in rows], x=[f"layer {l}" for l in range(depth)], y=labels,
        **categorical_scale(report["templates"], "template", "template ", height), text=text,
        texttemplate="%{text}", hovertext=hover, hoverinfo="text"))
    figure.update_layout(title="Signatures: template per layer (its weight below; ★ = progressive)",
                         yaxis={"autorange": "reversed"}, height=height, meta={"caption": (
                             "Each cell: the template whose mixture weight is largest at that layer, and that "
                             "weight (1: the layer is that template alone). ★ marks a progressive signature, the "
                             "compositional paper's pattern: each template used in one unbroken run of layers, "
                             "the runs never shorter with depth and longer at least once.")})
    return figure


def similarity_heatmap(report: dict) -> go.Figure:
    """Expected share of layers at which two tasks use the same template."""
    tasks = report["task_names"]
    figure = go.Figure(go.Heatmap(z=report["similarity"], x=tasks, y=tasks, zmin=0, zmax=1, colorscale="Viridis",
                                  text=[[f"{v:.2f}" for v in row] for row in report["similarity"]],
                                  texttemplate="%{text}", colorbar={"title": "same template"}))
    figure.update_layout(title="Signature similarity", yaxis={"autorange": "reversed"}, height=140 + 50 * len(tasks),
                         meta={"caption": (
                             "The expected share of layers at which two tasks use the same template: the mean over "
                             "layers of the dot product of their mixture weights. A task's own cell is 1 only where "
                             "its weights are one-hot; mixed weights read below 1.")})
    return figure


def mixture_weights_chart(weights, task: str) -> go.Figure:
    """One task's mixture weights: a stacked bar per layer, one colour per template."""
    figure = go.Figure()
    for k in range(len(weights[0])):
        figure.add_bar(x=[f"layer {layer}" for layer in range(len(weights))], y=[row[k] for row in weights],
                       name=f"template {k}", marker_color=index_colour(k))
    figure.update_layout(barmode="stack", title=f"{task}: mixture weights per layer", yaxis={"range": [0, 1]},
                         height=340, meta={"caption": (
                             "At each layer the task's block is the templates' weights mixed by these shares "
                             "(they sum to 1).")})
    return figure


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
