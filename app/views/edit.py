"""Edit a run's routing, evaluate the edit at once, and retrain it as a new run in the background;
or adapt the run to an unlabelled input domain (lsmn adapt), likewise in the background."""

import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from app.figures import training_curves
from app.layout import chart
from app.schemes import kinds_with, view_of
from app.navigation import run_for
from app.state import same_folder, checked_routing_of, open_when_listed, writable_runs
from app.text import plain
from lsmn_core import jobs
from lsmn_core.store import routing
from lsmn_core.data.domains import DOMAINS
from lsmn_core.training.adapt import domain_tasks
from lsmn_core.errors import LsmnError
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.store.runs import DATA_CACHE, list_runs

run = run_for("edit")
st.title(f"Edit and retrain · {plain(run.name)}")
try:
    doc, arrays, _ = checked_routing_of(run)
except LsmnError as exc:
    st.error(plain(exc))
    st.stop()

view = view_of(run.scheme)
JOB_WORDS = {"finetune": ("Retraining", "Retrained"), "adapt": ("Adaptation", "Adapted")}  # started, done


def start_job(args: list[str], folder: Path, out: Path) -> None:
    """A background `lsmn ARGS...` (finetune or adapt) whose new run, a child of this one, appears in `out`."""
    st.session_state["job"] = jobs.start(args, folder / "job.log")
    st.session_state["job_parent"], st.session_state["job_out"] = run.id, str(out)


def normalised(metrics: dict) -> float | None:
    """An accuracy's test value under the edit over the run's own; None for RMSE or an unknown own."""
    if metrics["metric"] != "accuracy" or "test_delta" not in metrics:
        return None
    own = metrics["test"] - metrics["test_delta"]
    return metrics["test"] / own if own else None


def edit_and_retrain() -> None:
    if view.editor is None:
        st.info(f"The {plain(run.scheme)} scheme has no per-task routing to edit. Pick a "
                f"{kinds_with(lambda v: v.editor)} run.")
        return
    edited = view.editor(run, doc, arrays)
    if st.button("Evaluate", type="primary"):
        with st.spinner("Evaluating every task under the edit..."):
            try:
                st.session_state["evaluation"] = (run.id, evaluate_run(run, edited, device="cpu",
                                                                       cache=writable_runs(run) / DATA_CACHE))
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
                                    "test change": m.get("test_delta"), "normalised": normalised(m)}
                                   for t, m in result[1]["metrics"].items()]),
                     hide_index=True, column_config={
                         "test change": st.column_config.NumberColumn(format="%+.4f"),
                         "normalised": st.column_config.NumberColumn(
                             format="%.3f", help="test accuracy over the run's own (for task vectors: over the "
                                                 "individual fine-tune's, as the merging papers report it)")})

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
            return
        routing_file = routing.write(folder, *edited)
        start_job(["finetune", str(run_path), "--routing", str(routing_file), "--steps", str(steps),
                   "--train", mode, "--out", str(out), "--quiet", "--device", "auto"], folder, out)


def adapt_to_a_domain() -> None:
    """lsmn adapt from the page: the target domain's task starts as a source task and only its
    mixture weights (or the input adapter) train, without its labels."""
    st.subheader("Adapt to an unlabelled input domain")
    tasks = domain_tasks(run)
    if not tasks:
        st.caption("Only the image tasks of a data set (a task's `dataset:`) in a network of the Studio's own have "
                   "input domains to adapt to." + (" This run is on a checkpoint." if run.on_checkpoint
                                                  else ""))
        return
    cols = st.columns(4)
    source = cols[0].selectbox("Source task", [t.name for t in tasks], key=f"adapt_source_{run.id}",
                               help="the target domain's task starts as this one (its mixture weights and head)")
    dataset = next(t.dataset for t in tasks if t.name == source)
    seen = {t.domain for t in run.config().tasks if t.dataset == dataset}
    domain = cols[1].selectbox("Target domain", [d for d in DOMAINS if d not in seen], key=f"adapt_domain_{run.id}")
    modes = ["routing", "encoder"] if "routing" in view.retrain_modes else ["encoder"]
    mode = cols[2].selectbox("Train", modes, key=f"adapt_train_{run.id}",
                             help="routing: only the target's mixture weights; encoder: only the input adapter")
    steps = cols[3].number_input("Adaptation steps", min_value=10, max_value=100_000, value=500, step=100,
                                 key=f"adapt_steps_{run.id}")
    st.caption("The target's labels are used only to evaluate: training matches the moments of its features to "
               "the source domains' (M3SDA's moment distance).")
    job = st.session_state.get("job")
    if domain and st.button("Adapt", disabled=bool(job and job.running)):
        out = writable_runs(run)
        folder = out / ".edits" / f"{run.id}-adapt-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        start_job(["adapt", str(run.path.resolve()), "--target-domain", domain, "--source", source,
                   "--train", mode, "--steps", str(steps), "--out", str(out), "--quiet", "--device", "auto"],
                  folder, out)


edit_and_retrain()
adapt_to_a_domain()
job = st.session_state.get("job")
job_was_running = bool(job and job.running)


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
                and r.created.timestamp() >= job.started - 5]
    child = next(iter(children), None)  # list_runs lists the newest first
    progress = child.progress() if child else None
    if job.running:
        elapsed = f"{time.time() - job.started:.0f} s elapsed"
        if progress:
            eta = progress.get("eta")
            left = f", about {eta:.0f} s left" if isinstance(eta, (int, float)) and progress["step"] else ""
            st.progress(min(progress["step"] / max(progress["total"], 1), 1.0),
                        text=f"{progress['phase']}: step {progress['step']} of {progress['total']} ({elapsed}{left})")
        else:
            st.info(f"{JOB_WORDS[job.args[0]][0]} started ({elapsed})...")
        if child and child.metrics():
            chart(st, training_curves(child.metrics()), "live_curves")  # the Overview's figure, as it grows
    elif job.returncode == 0 and child:
        st.success(f"{JOB_WORDS[job.args[0]][1]}: new run **{plain(child.id)}** (parent "
                   f"{plain(child.meta['parent'])}), in "
                   f"{plain(out)}. It is listed in the sidebar.")
        if st.button("Open the new run", key="open_child"):
            open_when_listed(out, child.path)
            st.switch_page("views/overview.py")
    elif job.returncode == 0:
        st.error(f"{JOB_WORDS[job.args[0]][0]} ended, but no new run of {plain(st.session_state['job_parent'])} "
                 f"appeared in {plain(out)}.")
    else:
        st.error(f"{JOB_WORDS[job.args[0]][0]} failed: "
                 + plain((job.output().strip().splitlines() or ["no output"])[-1]))


if job_was_running:  # a fragment that polls while the job runs; once it ended, plain widgets, so that
    st.fragment(run_every=2)(job_panel)()  # "Open the new run" reruns the whole page, never a fragment
else:
    job_panel()
