"""Masks and overlap: which weights each task uses, how much tasks share, per layer and per subset."""

import numpy as np
import streamlit as st

from analysis.overlap import cluster_order, group_density, weight_task_sets
from app.figures import (density_heatmap, group_density_heatmap, layer_overlap_chart, mask_image, overlap_heatmap,
                         subset_chart)
from app.layout import chart, task_columns
from app.navigation import run_for
from app.state import checked_routing_of, overlap_of
from app.text import plain
from lsmn_core.network.blocks import make_block
from lsmn_core.errors import LsmnError

run = run_for("masks")
st.title(f"Masks and overlap · {plain(run.name)}")
try:
    report = overlap_of(run)
except LsmnError as exc:
    st.error(f"Cannot read the run's routing: {plain(exc)}")
    st.stop()

tasks = run.task_names
order_by = st.radio("Order tasks", ["as trained", "by density", "clustered by overlap"], horizontal=True)
if order_by == "by density":
    order = list(np.argsort([-report["density"][t] for t in tasks]))
elif order_by == "clustered by overlap":
    order = cluster_order(np.asarray(report["pairwise"]))
else:
    order = list(range(len(tasks)))


def reorder(matrix):
    m = np.asarray(matrix)
    return m[np.ix_(order, order)].tolist()


ordered = {**report, "pairwise": reorder(report["pairwise"]), "intersections": reorder(report["intersections"]),
           "per_layer": [{**layer, "density": [layer["density"][i] for i in order]} for layer in report["per_layer"]]}
names = [tasks[i] for i in order]
left, right = task_columns(len(names))
chart(left, overlap_heatmap(ordered, names), "pairwise")
chart(right, density_heatmap(ordered, names), "layer_density")
left, right = st.columns(2)
chart(left, layer_overlap_chart(report), "layer_overlap")
chart(right, subset_chart(report), "subsets")
if report.get("per_group"):  # a checkpoint's targets: by kind of module too
    ordered_groups = {**ordered, "per_group": [{**g, "density": [g["density"][i] for i in order]}
                                              for g in report["per_group"]]}
    left, right = task_columns(len(names))
    chart(left, layer_overlap_chart(report, by="group"), "group_overlap")
    chart(right, density_heatmap(ordered_groups, names, by="group"), "group_density")



def weight_groups(name: str):
    """The run's block's units (attention heads) of a weight, or None (also when its block, a user's
    module, cannot be imported here)."""
    try:
        block = make_block(run.config().model)
    except LsmnError:
        return None
    return block.weight_groups(name.rsplit(".", 1)[-1])


st.subheader("One weight matrix")
masks = checked_routing_of(run)[2]
name = st.selectbox("Weight", list(masks), key=f"mask_param_{run.id}")
category, labels = weight_task_sets(masks[name], tasks)
groups = weight_groups(name)
chart(st, mask_image(category, labels, name, groups), "mask_image")
if groups is not None:
    density = group_density(masks[name][order], groups.axis, groups.size)
    chart(st, group_density_heatmap(density, names, groups, name), "group_density")
