"""Attributions (captum): how each task looks at the same input, and which blocks each task relies on."""

import numpy as np
import streamlit as st
import torch

from analysis.attributions import METHODS, explain
from app.figures import attribution_grid, block_importance_chart
from app.state import current_run, run_stamp
from app.text import plain
from lsmn_core.data import load_task
from lsmn_core.errors import LsmnError
from lsmn_core.store import open_run


@st.cache_resource(show_spinner=False, max_entries=4)
def _model(run_path: str, stamp: float):
    return open_run(run_path).load_model().eval()


@st.cache_resource(show_spinner=False, max_entries=16)
def _dev_inputs(run_path: str, stamp: float, source: int):
    """The dev inputs of one task (the others' data is not needed to explain them)."""
    config = open_run(run_path).config()
    return load_task(config.tasks[source], config.data).splits["dev"][0]


@st.cache_data(show_spinner=False, max_entries=64)
def _explain(run_path: str, stamp: float, source: int, indices: tuple, tasks: tuple, method: str):
    model = _model(run_path, stamp)
    x = torch.as_tensor(_dev_inputs(run_path, stamp, source)[list(indices)])
    maps, captions, importance = {}, {}, {}
    progress = st.progress(0.0, text="Attributing...")
    for i, t in enumerate(tasks):
        spec = model.specs[t]
        attributions, importance[spec.name] = explain(model, t, x, method)
        maps[spec.name] = attributions.mean(0).numpy()
        with torch.no_grad():
            output = model(x[:1], t)[0]
        captions[spec.name] = (f"predicts {int(output.argmax())}" if spec.kind == "classification"
                               else f"predicts {float(output[0]):.3g}")
        progress.progress((i + 1) / len(tasks), text=f"Attributed {spec.name}")
    progress.empty()
    return x[0].numpy(), maps, captions, importance


run = current_run()
if run is None:
    st.stop()
st.title(f"Attributions · {plain(run.name)}")
stamp = run_stamp(run)
names, specs = run.task_names, run.specs
source = names.index(st.selectbox("Inputs from the dev split of", names, key=f"attr_source_{run.id}"))
if specs[source].modality == "tokens":
    st.info("Attributions over token ids are not drawn yet: their gradients would have to flow through the "
            "embeddings, which this page does not do.")
    st.stop()
try:
    _model(str(run.path), stamp)
    n_dev = len(_dev_inputs(str(run.path), stamp, source))
except LsmnError as exc:
    st.warning(f"Attributions need the run's model and data: {plain(exc)}")
    st.stop()
shape = specs[source].input_shape
same_input = [n for i, n in enumerate(names) if specs[i].input_shape == shape]
chosen = st.multiselect("Tasks", same_input, default=same_input[:4], key=f"attr_tasks_{run.id}")
cols = st.columns(3)
method = cols[0].selectbox("Method", METHODS, key="attr_method")
first = cols[1].number_input("Sample", min_value=0, max_value=n_dev - 1, value=0, key=f"attr_sample_{run.id}")
count = cols[2].number_input("Average over samples", min_value=1, max_value=32, value=1, key="attr_count")
if not chosen:
    st.info("Pick at least one task.")
    st.stop()
indices = tuple(range(int(first), min(int(first) + int(count), n_dev)))
image, maps, captions, importance = _explain(str(run.path), stamp, source, indices,
                                             tuple(names.index(t) for t in chosen), method)
if len(shape) == 2:
    st.plotly_chart(attribution_grid(image, maps, captions), key="attr_grid")
else:
    st.bar_chart({t: np.asarray(m).ravel() for t, m in maps.items()}, height=260)
st.plotly_chart(block_importance_chart(importance), key="attr_blocks")
