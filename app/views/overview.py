"""Overview of one run: per-task metrics beside its baselines', parameters, mask overlap, what its
scheme's view adds (signatures, expert usage, alignment), training curves, config."""

import pandas as pd
import streamlit as st

from analysis.lineage import metric_changes, routing_changes
from app.figures import MANY_LINES, density_heatmap, overlap_heatmap, training_curves
from app.layout import chart, task_columns
from app.schemes import has_view, view_of
from app.navigation import run_for
from app.state import drawn_safely, listed_runs, overlap_of
from app.text import plain
from lsmn_core.errors import LsmnError
from lsmn_core.schemes import kinds_where
from lsmn_core.store.runs import list_runs

run = run_for("overview")

st.title(plain(run.name))
st.caption(f"{plain(run.id)} · scheme **{plain(run.scheme)}** · status **{plain(run.status)}** · created "
           f"{plain(run.meta.get('created', '?'))} · device {plain(run.meta.get('device', '?'))}")
try:
    summary = run.summary()
except LsmnError as exc:
    st.warning(plain(exc))
    st.stop()

params = summary["params"]
cols = st.columns(3)
cols[0].metric("Total parameters", f"{params['total']:,}")
cols[1].metric("Shared by 2+ tasks", f"{params['shared']:,}")
cols[2].metric("Tasks", len(run.task_names))

table = pd.DataFrame([
    {"task": task, "metric": m["metric"], "dev": m["dev"], "test": m["test"],
     "active parameters": params["active"][task], "body density": summary["density"][task]}
    for task, m in summary["metrics"].items()])
folder_runs = list_runs(run.path.parent)[0]
baseline_kinds = kinds_where(lambda scheme: scheme.baseline)
baselines = [r for r in folder_runs if r.scheme in baseline_kinds and r.id != run.id
             and r.same_tasks(run) and (r.path / "summary.json").is_file()]
for baseline in baselines:  # same tasks in the same folder: show the test metric beside this run's
    try:
        other = baseline.summary()["metrics"]
    except LsmnError:
        continue  # a damaged baseline is listed as such in the sidebar, not here
    table[f"test, {baseline.scheme} ({baseline.id})"] = [other[t]["test"] for t in table["task"]]
st.subheader("Tasks")
st.dataframe(table, hide_index=True, column_config={
    "dev": st.column_config.NumberColumn(format="%.4f"), "test": st.column_config.NumberColumn(format="%.4f"),
    "body density": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f")})



def parent_section(run, summary) -> None:
    """A retrained run: its parent (in its folder, or a sample run listed beside it), each task's
    change against it, and what of the routing differs."""
    parent_id = run.meta.get("parent")
    parent = next((r for r in listed_runs() if r.id == parent_id), None)
    adapted = summary.get("adapt") if isinstance(summary.get("adapt"), dict) else None
    st.subheader(f"{'Adapted' if adapted else 'Retrained'} from {plain(parent_id)}")
    finetune = adapted or (summary.get("finetune") if isinstance(summary.get("finetune"), dict) else {})
    st.caption(f"trained: {plain(finetune.get('train', '?'))} · steps {plain(summary.get('steps', '?'))}"
               + ("" if parent else " · the parent is not listed in the sidebar, so there is nothing to compare"))
    if adapted:
        adaptation_note(adapted, summary)
    if parent is None:
        return
    try:
        changes = routing_changes(parent.routing_state(), run.routing_state(), parent.task_names)
        metrics = metric_changes(parent.summary(), summary)
    except LsmnError as exc:
        st.warning(f"Cannot compare with the parent: {plain(exc)}")
        return
    left, right = st.columns(2)
    left.dataframe(pd.DataFrame(metrics), hide_index=True, column_config={
        "change": st.column_config.NumberColumn(format="%+.4f")})
    if changes:
        right.dataframe(pd.DataFrame(changes), hide_index=True)
    else:
        right.info("The routing is the parent's: every mask, order, expert and hypermodule as it was.")


def adaptation_note(adapted: dict, summary: dict) -> None:
    """What `lsmn adapt` did: the target domain's task, where it started, what trained on which
    objective, and its test metric before and after (its labels were read only for these)."""
    target = adapted.get("target")
    before = adapted.get("target_test_before")
    after = summary["metrics"].get(target, {}).get("test") if isinstance(target, str) else None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    trainable = adapted.get("trainable")
    aligned_to = adapted.get("aligned_to")
    aligned_to = ", ".join(map(str, aligned_to[:20])) if isinstance(aligned_to, list) else "?"
    def short(value) -> str:
        return plain(str(value)[:200])

    st.markdown(
        f"**{short(target)}** (domain {short(adapted.get('target_domain'))}) started as "
        f"{short(adapted.get('source'))} and was adapted without its labels by "
        f"{short(adapted.get('objective'))} towards {short(aligned_to)}, "
        f"training {short(f'{trainable:,}' if isinstance(trainable, int) else '?')} parameters"
        + (f": test {before:.4f} before, {after:.4f} after ({after - before:+.4f})." if numbers else "."))


if run.meta.get("parent"):
    parent_section(run, summary)

scheme_overview = view_of(run.scheme).overview
if not has_view(run.scheme):
    st.caption(f"No app view is installed for the {plain(run.scheme)} scheme: these pages show what every run has "
               "(metrics, parameters, curves, masks where it has them, attributions).")
try:
    report = overlap_of(run)
    if report:
        left, right = task_columns(len(run.task_names))
        chart(left, overlap_heatmap(report, run.task_names), "overlap")
        chart(right, density_heatmap(report, run.task_names), "density")
    drawn_by_scheme = bool(scheme_overview and drawn_safely(f"the {run.scheme} scheme's figures", scheme_overview, run))
    drawn = bool(report) or drawn_by_scheme
except LsmnError as exc:
    st.error(f"Cannot read the run's routing: {plain(exc)}")
    drawn = True
if not drawn:
    st.info(f"The {plain(run.scheme)} scheme has no per-task masks or signatures: every task uses its whole body.")

records = run.metrics()
if records:
    shown = []
    if len(run.task_names) > MANY_LINES:
        shown = st.multiselect("Curves of single tasks (type to search)", run.task_names, key=f"curves_{run.id}",
                               help="With this many tasks the chart shows the median and the middle 80% of "
                                    "tasks per metric; tasks picked here get a line of their own.")
    chart(st, training_curves(records, shown), "curves")
with st.expander("Config"):
    st.json(run.meta["config"])
