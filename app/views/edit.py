"""Edit a run's routing, evaluate the edit at once, and retrain it as a new run in the background."""

from datetime import datetime

import pandas as pd
import streamlit as st

from app.state import checked_routing_of, current_run
from lsmn_core import jobs, routing
from lsmn_core.errors import LsmnError
from lsmn_core.evaluation import evaluate_run
from lsmn_core.store import list_runs

run = current_run()
if run is None:
    st.stop()
st.title(f"Edit and retrain · {run.name}")
try:
    doc, arrays, _ = checked_routing_of(run)
except LsmnError as exc:
    st.error(str(exc))
    st.stop()
tasks = run.task_names


def mask_editor():
    depth = run.config().model.depth
    st.caption("Per task and body block: keep the mask, reset it (every weight), clear it (no weight), or "
               "copy another task's mask.")
    options = list(routing.MASK_ACTIONS) + [f"copy:{t}" for t in tasks]
    table = pd.DataFrame({f"block {b}": ["keep"] * len(tasks) for b in range(depth)}, index=tasks)
    edited = st.data_editor(table, key=f"mask_actions_{run.id}", column_config={
        c: st.column_config.SelectboxColumn(c, options=options, required=True) for c in table.columns})
    actions = {(t, b): edited.loc[t, f"block {b}"] for t in tasks for b in range(depth)}
    return doc, routing.edit_masks(doc, arrays, actions)


def signature_editor():
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


def expert_editor():
    st.caption("Tick the experts each task may use at each layer (at least one per layer).")
    rows = [(t, l) for t in tasks for l in range(len(doc["allowed"][t]))]
    table = pd.DataFrame([doc["allowed"][t][l] for t, l in rows], index=[f"{t} · layer {l}" for t, l in rows],
                         columns=[f"expert {e}" for e in range(doc["experts"])])
    edited = st.data_editor(table, key=f"allowed_{run.id}")
    allowed = {t: [[bool(v) for v in edited.loc[f"{t} · layer {l}"]] for l in range(len(doc["allowed"][t]))]
               for t in tasks}
    return {**doc, "allowed": allowed}, arrays


def alignment_editor():
    K = doc["hypermodules"]
    st.caption(f"The hypermodule (0..{K - 1}) each block location of each task draws its weights from. "
               "Point a task's blocks at another task's hypermodules to make them share.")
    rows = [(t, i) for t in tasks for i in range(len(doc["alignment"][t]))]
    table = pd.DataFrame({"task": [t for t, _ in rows], "block": [i for _, i in rows],
                          "hypermodule": [doc["alignment"][t][i] for t, i in rows]})
    edited = st.data_editor(table, key=f"alignment_{run.id}", hide_index=True, disabled=["task", "block"],
                            column_config={"hypermodule": st.column_config.NumberColumn(
                                "hypermodule", min_value=0, max_value=K - 1, step=1, required=True)})
    alignment = {t: [] for t in tasks}
    for t, k in zip(edited["task"], edited["hypermodule"]):
        alignment[t].append(int(k))
    return {**doc, "alignment": alignment}, arrays


editors = {"sparse": mask_editor, "mann": mask_editor, "mixture": signature_editor, "moe": expert_editor,
           "hyper": alignment_editor}
if run.scheme not in editors:
    st.info(f"The {run.scheme} scheme has no per-task routing to edit. Pick a sparse, mann, mixture, moe or "
            "hyper run.")
    st.stop()
edited = editors[run.scheme]()

if st.button("Evaluate", type="primary"):
    with st.spinner("Evaluating every task under the edit..."):
        try:
            st.session_state["evaluation"] = (run.id, evaluate_run(run, edited, device="cpu"))
        except LsmnError as exc:
            st.session_state["evaluation"] = (run.id, None)
            st.error(str(exc))
result = st.session_state.get("evaluation")
if result and result[0] == run.id and result[1]:
    metrics = result[1]["metrics"]
    changes = {t: m["test_delta"] for t, m in metrics.items() if "test_delta" in m}
    # Accuracy is better higher, RMSE lower: the worst-hit task is the one whose change hurts most.
    harm = {t: -d if metrics[t]["metric"] == "accuracy" else d for t, d in changes.items()}
    worst = max(harm, key=harm.get) if harm else None
    if worst is not None:
        st.markdown(f"**Under the edit:** mean test change {sum(changes.values()) / len(changes):+.4f}; "
                    f"worst hit {worst} ({metrics[worst]['metric']} {changes[worst]:+.4f}).")
    st.dataframe(pd.DataFrame([{"task": t, "metric": m["metric"], "dev": m["dev"], "test": m["test"],
                                "test change": m.get("test_delta")} for t, m in result[1]["metrics"].items()]),
                 hide_index=True, column_config={"test change": st.column_config.NumberColumn(format="%+.4f")})

st.subheader("Retrain under the edit")
cols = st.columns(3)
steps = cols[0].number_input("Steps", min_value=10, max_value=100_000, value=500, step=100)
modes = ["all", "routing"] if run.scheme in ("mixture", "hyper") else ["all"]
mode = cols[1].selectbox("Train", modes, help="all: every parameter; routing: only the signatures (mixture) "
                                              "or the block contexts (hyper)")
job = st.session_state.get("job")
if cols[2].button("Retrain", disabled=bool(job and job.running)):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = run.path.parent / ".edits" / f"{run.id}-{stamp}"
    try:
        routing.decode(edited[0], edited[1], run.load_model())  # refuse an invalid edit before starting
    except LsmnError as exc:
        st.error(str(exc))
        st.stop()
    routing_file = routing.write(folder, *edited)
    st.session_state["job"] = jobs.start(
        ["finetune", str(run.path), "--routing", str(routing_file), "--steps", str(steps), "--train", mode,
         "--out", str(run.path.parent), "--quiet", "--device", "auto"], folder / "job.log")
    st.session_state["job_parent"] = run.id
    job = st.session_state["job"]


@st.fragment(run_every=2)
def job_panel():
    job = st.session_state.get("job")
    if job is None:
        return
    children = [r for r in list_runs(run.path.parent)[0] if r.meta.get("parent") == st.session_state["job_parent"]
                and r.meta.get("created", "") >= datetime.fromtimestamp(job.started - 5).astimezone().isoformat()]
    child = max(children, key=lambda r: r.meta.get("created", ""), default=None)
    progress = child.progress() if child else None
    if job.running:
        if progress:
            st.progress(min(progress["step"] / max(progress["total"], 1), 1.0),
                        text=f"{progress['phase']}: step {progress['step']} of {progress['total']}")
        else:
            st.info("Retraining started...")
        if child and child.metrics():
            dev = pd.DataFrame([m for m in child.metrics() if m["split"] == "dev"])
            st.line_chart(dev, x="step", y="value", color="task", height=220)
    elif job.returncode == 0 and child:
        st.success(f"Retrained: new run **{child.id}** (parent {child.meta['parent']}). Pick it in the sidebar.")
    else:
        st.error("Retraining failed: " + (job.output().strip().splitlines() or ["no output"])[-1])


job_panel()
