"""Attributions (captum): how each task looks at the same input, and which blocks each task relies on."""

import numpy as np
import streamlit as st
import torch

from analysis.attributions import METHODS, TOKEN_METHODS, explain
from app.layout import chart
from app.figures import attribution_grid, block_importance_chart, token_attribution_chart, vector_attribution_chart
from app.navigation import run_for
from app.state import opened_at, run_stamp, writable_runs
from app.text import plain
from lsmn_core.data.loading import load_task
from lsmn_core.errors import LsmnError
from lsmn_core.pretrained.text import tokenization
from lsmn_core.store.runs import DATA_CACHE

ROWS = 512  # dev rows offered to explain (a streamed task reads only these)
TOKEN_STEPS = 64  # points on a token task's path: its outputs change sharply near zero embeddings


@st.cache_resource(show_spinner=False, max_entries=4)
def _model(run_path: str, stamp: float):
    return opened_at(run_path, stamp).load_model().eval()


@st.cache_resource(show_spinner=False, max_entries=16)
def _dev_inputs(run_path: str, stamp: float, source: int):
    """The first dev inputs and targets of one task (the others' data is not needed to explain them),
    and the text of its token ids where the data set knows it."""
    run = opened_at(run_path, stamp)
    config = run.config()
    data = load_task(config.tasks[source], config.data, tokenization(config, writable_runs(run) / DATA_CACHE))
    return (*data.rows("dev", ROWS), data.vocabulary)


def _token_text(ids: np.ndarray, vocabulary: list[str] | None) -> list[str]:
    return [vocabulary[i] if vocabulary and i < len(vocabulary) else f"#{i}" for i in ids]


@st.cache_data(show_spinner=False, max_entries=64)
def _explain(run_path: str, stamp: float, source: int, indices: tuple, tasks: tuple, method: str,
             position: int | None = None):
    model = _model(run_path, stamp)
    inputs, targets, _ = _dev_inputs(run_path, stamp, source)
    x = torch.as_tensor(inputs[list(indices)])
    maps, captions, importance = {}, {}, {}
    progress = st.progress(0.0, text="Attributing...")
    for i, t in enumerate(tasks):
        spec = model.specs[t]
        steps = TOKEN_STEPS if spec.reads_ids else 24
        attributions, importance[spec.name] = explain(model, t, x, method, n_steps=steps,
                                                      position=position if spec.kind == "tagging" else None)
        maps[spec.name] = attributions.mean(0).numpy()
        with torch.no_grad():
            output = model(x[:1], t)[0]
        truth = targets[indices[0]] if t == source else None  # the other tasks' labels are not loaded
        if spec.kind == "tagging":
            captions[spec.name] = "every token's tag" if position is None else (
                f"tags it {int(output.argmax(-1)[position])}"
                + ("" if truth is None else f" · true {int(truth[position])}"))
        else:
            shown = (lambda v: f"{int(v)}") if spec.kind == "classification" else (lambda v: f"{float(v):.3g}")
            predicted = shown(output.argmax() if spec.kind == "classification" else output[0])
            captions[spec.name] = f"predicts {predicted}" + ("" if truth is None else f" · true {shown(truth)}")
        progress.progress((i + 1) / len(tasks), text=f"Attributed {spec.name}")
    progress.empty()
    return x[0].numpy(), maps, captions, importance


run = run_for("attributions")
st.title(f"Attributions · {plain(run.name)}")
stamp = run_stamp(run)
names = run.task_names
try:
    specs = run.specs
except LsmnError as exc:  # a damaged task list: said on the page, the other runs unharmed
    st.error(plain(exc))
    st.stop()
source = names.index(st.selectbox("Inputs from the dev split of", names, key=f"attr_source_{run.id}"))
tokens = specs[source].reads_ids
try:
    _model(str(run.path), stamp)
    dev, _, vocabulary = _dev_inputs(str(run.path), stamp, source)
except LsmnError as exc:
    st.warning(f"Attributions need the run's model and data: {plain(exc)}")
    st.stop()
n_dev = len(dev)
kind_of_input = (specs[source].modality, specs[source].input_shape)
same_input = [n for i, n in enumerate(names) if (specs[i].modality, specs[i].input_shape) == kind_of_input]
chosen = st.multiselect("Tasks", same_input, default=same_input[:4], key=f"attr_tasks_{run.id}")
cols = st.columns(3)
method = cols[0].selectbox("Method", TOKEN_METHODS if tokens else METHODS,
                           key="attr_method_tokens" if tokens else "attr_method")
first = cols[1].number_input("Sample", min_value=0, max_value=n_dev - 1, value=0, key=f"attr_sample_{run.id}")
count = cols[2].number_input("Average over samples", min_value=1, max_value=32, value=1, key="attr_count",
                             disabled=tokens, help="Token sequences differ in their tokens: one at a time")
if not chosen:
    st.info("Pick at least one task.")
    st.stop()
indices = tuple(range(int(first), min(int(first) + (1 if tokens else int(count)), n_dev)))
position = None
if tokens:
    real = [i for i, token in enumerate(dev[int(first)]) if token != specs[source].pad]
    text = _token_text(dev[int(first)], vocabulary)
    if any(specs[names.index(t)].kind == "tagging" for t in chosen):
        choices = [None, *real]
        position = st.selectbox("Tagging tasks explain", choices, key=f"attr_position_{run.id}",
                                format_func=lambda i: "every real token's tag" if i is None
                                else f"the tag of token {i}: {text[i]}")
try:  # a run whose weights come from elsewhere (a task vectors run's fine-tunes) reads them only now
    image, maps, captions, importance = _explain(str(run.path), stamp, source, indices,
                                                 tuple(names.index(t) for t in chosen), method, position)
except LsmnError as exc:
    st.warning(f"Attributions need the run's model and data: {plain(exc)}")
    st.stop()
if tokens:
    chart(st, token_attribution_chart([text[i] for i in real], {t: m[real] for t, m in maps.items()},
                                      captions, None if position is None else real.index(position)), "attr_tokens")
elif len(specs[source].input_shape) == 2:
    chart(st, attribution_grid(image, maps, captions), "attr_grid")
else:
    chart(st, vector_attribution_chart(maps, captions), "attr_vector")
chart(st, block_importance_chart(importance), "attr_blocks")
