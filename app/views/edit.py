"""Edit a run's routing, evaluate the edit at once, and retrain it as a new run in the background."""

import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from app.figures import training_curves
from app.layout import chart
from app.schemes import kinds_with, view_of
from app.state import same_folder, checked_routing_of, current_run, open_when_listed, writable_runs
from app.text import plain
from lsmn_core import jobs, routing
from lsmn_core.errors import LsmnError
from lsmn_core.evaluation import evaluate_run
from lsmn_core.store import list_runs

run = current_run()
if run is None:
    st.stop()
st.title(f"Edit and retrain · {plain(run.name)}")
try:
    doc, arrays, _ = checked_routing_of(run)
except LsmnError as exc:
    st.error(plain(exc))
    st.stop()

view = view_of(run.scheme)
if view.editor is None:
    st.info(f"The {plain(run.scheme)} scheme has no per-task routing to edit. Pick a "
            f"{kinds_with(lambda v: v.editor)} run.")
    st.stop()
edited = view.editor(run, doc, arrays)

if st.button("Evaluate", type="primary"):
    with st.spinner("Evaluating every task under the edit..."):
        try:
            st.session_state["evaluation"] = (run.id, evaluate_run(run, edited, device="cpu"))
        except LsmnError as exc:
            st.session_state["evaluation"] = (run.id, None)
            st.error(plain(exc))
result = st.session_state.get("evaluation")
if result and result[0] == run.id and result[1]:
    metrics = result[1]["metrics"]
    changes = {t: m["test_delta"] for t, m in metrics.items() if "test_delta" in m}
    # Accuracy is better higher, RMSE lower: the worst-hit task is the one whose change hurts most.
    harm = {t: -d if metrics[t]["metric"] == "accuracy" else d for t, d in changes.items()}
    worst = max(harm, key=harm.get) if harm else None
    if worst is not None:
        st.markdown(f"**Under the edit:** mean test change {sum(changes.values()) / len(changes):+.4f}; "
                    f"worst hit {plain(worst)} ({plain(metrics[worst]['metric'])} {changes[worst]:+.4f}).")
    st.dataframe(pd.DataFrame([{"task": t, "metric": m["metric"], "dev": m["dev"], "test": m["test"],
                                "test change": m.get("test_delta")} for t, m in result[1]["metrics"].items()]),
                 hide_index=True, column_config={"test change": st.column_config.NumberColumn(format="%+.4f")})

st.subheader("Retrain under the edit")
cols = st.columns(3)
steps = cols[0].number_input("Steps", min_value=10, max_value=100_000, value=500, step=100)
mode = cols[1].selectbox("Train", view.retrain_modes, help="all: every parameter"
                        + (f"; routing: {view.routing_help}" if "routing" in view.retrain_modes else ""))
job = st.session_state.get("job")
if cols[2].button("Retrain", disabled=bool(job and job.running)):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_path, out = run.path.resolve(), writable_runs(run)  # the job may run elsewhere: every path is absolute
    folder = out / ".edits" / f"{run.id}-{stamp}"
    try:
        routing.decode(edited[0], edited[1], run.load_model())  # refuse an invalid edit before starting
    except LsmnError as exc:
        st.error(plain(exc))
        st.stop()
    routing_file = routing.write(folder, *edited)
    st.session_state["job"] = jobs.start(
        ["finetune", str(run_path), "--routing", str(routing_file), "--steps", str(steps), "--train", mode,
         "--out", str(out), "--quiet", "--device", "auto"], folder / "job.log")
    st.session_state["job_parent"], st.session_state["job_out"] = run.id, str(out)
    job = st.session_state["job"]


job_was_running = bool(job and job.running)


@st.fragment(run_every=2 if job_was_running else None)  # polls only while a job runs
def job_panel():
    job = st.session_state.get("job")
    if job is None:
        return
    out = Path(st.session_state["job_out"])
    if job_was_running and not job.running:  # it just ended: the whole page again, so that Retrain is free
        if not same_folder(out, st.session_state["runs_folder"]):  # and the sidebar lists the new run
            open_when_listed(out, run.path)
        st.rerun()
    children = [r for r in list_runs(out)[0] if r.meta.get("parent") == st.session_state["job_parent"]
                and r.meta.get("created", "") >= datetime.fromtimestamp(job.started - 5).astimezone().isoformat()]
    child = max(children, key=lambda r: r.meta.get("created", ""), default=None)
    progress = child.progress() if child else None
    if job.running:
        elapsed = f"{time.time() - job.started:.0f} s elapsed"
        if progress:
            eta = progress.get("eta")
            left = f", about {eta:.0f} s left" if isinstance(eta, (int, float)) and progress["step"] else ""
            st.progress(min(progress["step"] / max(progress["total"], 1), 1.0),
                        text=f"{progress['phase']}: step {progress['step']} of {progress['total']} ({elapsed}{left})")
        else:
            st.info(f"Retraining started ({elapsed})...")
        if child and child.metrics():
            chart(st, training_curves(child.metrics()), "live_curves")  # the Overview's figure, as it grows
    elif job.returncode == 0 and child:
        st.success(f"Retrained: new run **{plain(child.id)}** (parent {plain(child.meta['parent'])}), in "
                   f"{plain(out)}. It is listed in the sidebar.")
        if st.button("Open the new run", key="open_child"):
            open_when_listed(out, child.path)
            st.switch_page("views/overview.py")
    else:
        st.error("Retraining failed: " + plain((job.output().strip().splitlines() or ["no output"])[-1]))


job_panel()
