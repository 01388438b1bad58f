"""The vectors scheme in the app: how the imported fine-tunes interfere (sign conflicts, cosine
similarity and magnitudes, per layer) on the Overview, and the merge recipe on the Edit page:
method, lambda, density, seed, the per-task per-layer coefficients and TALL's per-task lambda;
Evaluate scores the merge on every task, Retrain learns the coefficients (AdaMerging), Export writes
the merged network."""

from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.figures import bar_chart, cell_labels, cosine_heatmap, norms_heatmap, task_rows_height
from app.layout import chart
from app.schemes.view import SchemeView
from app.state import writable_runs
from app.text import plain
from lsmn_core.errors import LsmnError
from lsmn_core.merges import MERGES
from lsmn_core.merges.method import COMMON
from lsmn_core.schemes.vectors.evaluation import LAMBDAS, lambda_sweep
from lsmn_core.schemes.vectors.scheme import INDIVIDUAL, recipe_from
from lsmn_core.schemes.vectors.writer import write_merge


COSINE = "cosine similarity of their task vectors"  # the measures of pairs of tasks, by their names in the app
SINGULAR = "singular task interference"


def interference_heatmap(matrix: list[list[float]], tasks: list[str], where: str) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=matrix, x=tasks, y=tasks, zmin=0, colorscale="Reds",
                                  text=[[f"{v:.3g}" for v in row] for row in matrix],
                                  texttemplate=cell_labels(len(tasks)),
                                  hovertemplate="%{y} · %{x}: %{z:.4g}<extra></extra>"))
    figure.update_layout(title=f"Singular task interference of each pair ({where})", yaxis={"autorange": "reversed"},
                         height=task_rows_height(len(tasks)), meta={"caption": (
                             "||(U^T U - I) S (V^T V - I)||_1 of the two tasks' top floor(r / T) singular vectors, "
                             "summed over the weight matrices (Task Singular Vectors): 0 where their directions are "
                             "orthogonal; the darkest pairs are the ones a merge of these weights trades off.")})
    return figure


def low_rank_heatmap(energy: list[list[float]], tasks: list[str], layers: list[str]) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=energy, x=layers, y=tasks, zmin=0, zmax=1, colorscale="Blues",
                                  hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"))
    figure.update_layout(title="Share of each task's change in its top floor(r / T) singular values",
                         yaxis={"autorange": "reversed"}, height=task_rows_height(len(tasks)), meta={"caption": (
                             "Per layer's weight matrices: near 1, the task's change is low-rank enough that its "
                             "share of the directions holds it (what TSV-M keeps of it); lower, the merge cuts it.")})
    return figure


def overview(run) -> bool:
    stats = run.summary().get("vectors")
    if not stats:
        return False
    tasks, layers = run.task_names, stats["layers"]
    left, right = st.columns(2)
    chart(left, bar_chart(dict(zip(layers, stats["sign_conflicts"])), "Sign conflicts per layer",
                          "share of shared weights", "", (
                              "Of the weights two or more tasks' masks keep (their largest deltas), the share whose "
                              "kept deltas disagree in sign: the interference TIES resolves by electing a sign.")),
          "conflicts")
    measures = pair_measures(run)
    where = right.selectbox("Pairs of tasks over", list(measures[COSINE]), key=f"cosine_{run.id}")
    chart(right, cosine_heatmap(measures[COSINE][where], tasks, where), "cosine")
    if SINGULAR in measures:  # the run's targets include weight matrices
        left, right = st.columns(2)
        chart(left, interference_heatmap(measures[SINGULAR][where], tasks, where), "singular_interference")
        chart(right, low_rank_heatmap(stats["low_rank_energy"], tasks, layers), "low_rank")
    chart(st, norms_heatmap(stats["norms"], tasks, layers), "norms")
    return True


def pair_measures(run) -> dict[str, dict[str, list[list[float]]]]:
    """The sharing graph's edges by the cosine of two tasks' vectors (negative: the pair pulls against
    each other) or, where the targets include weight matrices, by their singular task interference;
    over the network and per layer."""
    stats = run.summary().get("vectors")
    if not stats:
        return {}
    measures = {COSINE: {"the whole network": stats["cosine"], **dict(zip(stats["layers"], stats["cosine_per_layer"]))}}
    if "singular_pairwise" in stats:
        measures[SINGULAR] = {
            "the whole network": stats["singular_pairwise"],
            **dict(zip(stats["layers"], stats["singular_pairwise_per_layer"]))}
    return measures


def recipe_editor(run, doc, arrays):
    """The merge recipe, edited; Export writes the merge of the recipe as it stands."""
    tasks, layers = run.task_names, doc.get("layers", [])
    recipe = doc.get("recipe", {})
    methods = [INDIVIDUAL, *MERGES.names()]
    cols = st.columns(4)
    method = cols[0].selectbox("Method", methods, index=methods.index(recipe.get("method", INDIVIDUAL)),
                               key=f"method_{run.id}", help="individual: each task its own fine-tune (the run's "
                               "metrics); the others merge the fine-tunes into one network (tall: one per "
                               "task; tsv_c compresses each task's own)")
    default = 1.0 if method == INDIVIDUAL else MERGES.get(method).default_lambda
    same = method == recipe.get("method")
    chosen = st.session_state.get(f"lambda_chosen_{run.id}_{method}")  # by "Use it" below a sweep
    lam = cols[1].number_input("Lambda", value=float(chosen if chosen is not None else recipe.get("lambda", default)
                                                     if same else default), step=0.05, format="%.3f",
                               key=f"lambda_{run.id}_{method}_{chosen}")
    density = cols[2].number_input("Density", min_value=0.001, max_value=1.0, value=float(recipe.get("density", 0.2)),
                                   step=0.05, key=f"density_{run.id}", help="ties and dare: the share of each task "
                                   "vector kept")
    seed = cols[3].number_input("Seed", min_value=0, value=int(recipe.get("seed", 0)), step=1, key=f"seed_{run.id}",
                                help="dare's random drops")
    st.caption("Coefficients: each task's weight in the merge, per layer (1: as the method says; AdaMerging learns "
               "them when you retrain).")
    stored = recipe.get("coefficients") or [[1.0] * len(layers) for _ in tasks]
    table = st.data_editor(pd.DataFrame(stored, index=tasks, columns=layers), key=f"coefficients_{run.id}")
    tall = recipe.get("tall_lambdas") or [0.4] * len(tasks)
    if method != INDIVIDUAL and MERGES.get(method).uses_tall_lambdas:
        edited_tall = st.data_editor(pd.DataFrame({"TALL lambda": tall}, index=tasks), key=f"tall_{run.id}")
        tall = list(edited_tall["TALL lambda"])
    merge = MERGES.get(method) if method != INDIVIDUAL else None
    common, keep = recipe.get("common", COMMON), recipe.get("keep")
    if merge is not None and merge.uses_common:
        common = st.columns(4)[0].number_input(
            "Common", min_value=0.01, max_value=0.99, value=float(common), step=0.05, key=f"common_{run.id}",
            help="iso_cts: the share of each weight's directions taken from the sum of the task vectors")
    if merge is not None and merge.uses_keep:
        keep = st.columns(4)[0].number_input(
            "Keep", min_value=0.0, max_value=1.0, value=float(keep or 0.0), step=0.01, format="%.3f",
            key=f"keep_{run.id}", help="the share of each weight's numbers a task keeps (0: its top floor(r / T) "
            "singular triplets, the paper's default)") or None
    coefficients = [[float(v) for v in row] for row in table.to_numpy()]
    plain_table = all(v == 1.0 for row in coefficients for v in row)
    edited = {**doc, "recipe": {"method": method, "lambda": lam, "density": density, "seed": int(seed),
                                "coefficients": [] if plain_table else coefficients,
                                "tall_lambdas": [float(v) for v in tall], "consensus_k": recipe.get("consensus_k", 2),
                                "exclude": recipe.get("exclude", []), "common": common,
                                **({"keep": keep} if keep else {})}}
    if method != INDIVIDUAL:
        choose_lambda(run, edited, method)
    export(run, edited, method)
    return edited, arrays


def lambda_curve(sweep: list[dict], chosen: float, method: str) -> go.Figure:
    best = next(row["dev_normalised"] for row in sweep if row["lambda"] == chosen)
    figure = go.Figure([
        go.Scatter(x=[row["lambda"] for row in sweep], y=[row["dev_normalised"] for row in sweep], name=method,
                   mode="lines+markers", hovertemplate="lambda %{x:.1f}: %{y:.4f}<extra></extra>"),
        go.Scatter(x=[chosen], y=[best], mode="markers", name=f"chosen: {chosen:.1f}",
                   marker={"symbol": "star", "size": 16},
                   hovertemplate="chosen: lambda %{x:.1f}, %{y:.4f}<extra></extra>")])
    figure.update_layout(title=f"{method}: the merge's mean normalised dev metric against lambda", height=340,
                         xaxis={"title": "lambda"}, yaxis={"title": "mean normalised dev metric"}, meta={"caption": (
                             "Each point: the merge at that lambda, each task's dev metric over its individual "
                             "fine-tune's, averaged over tasks; the star is the best, chosen without test data.")})
    return figure


def choose_lambda(run, edited: dict, method: str) -> None:
    """Sweep lambda from 0.1 to 3.0 on dev (lsmn merge --lambda auto), draw the curve, offer the best."""
    key = f"sweep_{run.id}_{method}"
    if st.button("Choose lambda on dev", key=f"sweep_button_{run.id}", help="the merge at each lambda from 0.1 to "
                 "3.0, scored on each task's dev split (as lsmn merge --lambda auto does)"):
        bar = st.progress(0.0, text="Sweeping lambda...")
        try:
            recipe = recipe_from(edited["recipe"], len(run.task_names), len(edited.get("layers", [])))
            st.session_state[key] = lambda_sweep(run, recipe, lambda done, lam, mean: bar.progress(
                done / len(LAMBDAS), text=f"lambda {lam:.1f}: mean normalised dev {mean:.4f}"), device="cpu")
        except LsmnError as exc:
            st.error(plain(exc))
        bar.empty()
    if key in st.session_state:
        best, sweep = st.session_state[key]
        chart(st, lambda_curve(sweep, best, method), "lambda_sweep")
        if st.button(f"Use lambda = {best:.1f}", key=f"use_sweep_{run.id}"):
            st.session_state[f"lambda_chosen_{run.id}_{method}"] = best
            st.rerun()


def export(run, edited: dict, method: str) -> None:
    """Write the edited recipe's merge as a folder in the checkpoint's format, in the user's runs folder."""
    if method == INDIVIDUAL:
        return
    task = None
    if MERGES.get(method).per_task:
        task = st.selectbox("Task to export", run.task_names, key=f"export_task_{run.id}")
    if st.button("Export the merge", key=f"export_{run.id}"):
        out = writable_runs(run) / ".merges" / f"{run.id}-{method}-{datetime.now():%Y%m%d-%H%M%S}"  # not a run
        try:
            recipe = recipe_from(edited["recipe"], len(run.task_names), len(edited.get("layers", [])))
            with st.spinner("Writing the merged network, a tensor at a time..."):
                st.success(f"Written: {plain(write_merge(run, recipe, out, task))}")
        except LsmnError as exc:
            st.error(plain(exc))


VIEW = SchemeView(overview=overview, editor=recipe_editor, pair_measures=pair_measures, retrain_modes=("routing",),
                  routing_help="the merge's coefficients, by AdaMerging (the entropy of each task's predictions on "
                               "its unlabelled inputs)")
