"""Plotly figures built from analysis results (no Streamlit here, so tests can build them too)."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from analysis.overlap import set_label
from lsmn_core.network.layers import layer_label

# One colour per module index (template, expert, hypermodule), the same in every chart of every run.
INDEX_COLOURS = qualitative.Dark24 + qualitative.Light24 + qualitative.Alphabet


def index_colour(k: int) -> str:
    return INDEX_COLOURS[k % len(INDEX_COLOURS)]


COLOUR_BAR_MARGIN, TICK_PX = 180, 16  # px of a figure's height outside its colour bar; px per tick label


def categorical_scale(n: int, title: str, prefix: str, height: int) -> dict:
    """Heatmap arguments that colour the integers 0..n-1 each by its own index colour (never a
    continuous ramp, whose 4.5 means nothing for an index), with a colour bar naming them
    `prefix`k as every other chart does ("template 3", "H12"): as many names as fit the bar of a
    figure `height` px tall (at most 24), evenly spaced, so that they never overprint."""
    scale = []
    for k in range(n):
        scale += [[k / n, index_colour(k)], [(k + 1) / n, index_colour(k)]]
    fit = min(24, max(2, (height - COLOUR_BAR_MARGIN) // TICK_PX))
    ticks = list(range(n)) if n <= fit else list(range(0, n, math.ceil(n / fit)))
    return {"zmin": -0.5, "zmax": n - 0.5, "colorscale": scale,
            "colorbar": {"tickvals": ticks, "ticktext": [f"{prefix}{k}" for k in ticks], "title": title}}


def overlap_heatmap(report: dict, tasks: list[str]) -> go.Figure:
    """Pairwise mask overlap ratio |M_a ∩ M_b| / |M_a ∪ M_b| (1: the same weights, 0: none shared);
    hover shows the weights both tasks use and each task's count. Past POOLED_TASKS tasks, cells are
    the mean over blocks of consecutive tasks (in the order given), and hover names the blocks."""
    pairwise = np.asarray(report["pairwise"], dtype=float)
    title = "Mask overlap ratio |A ∩ B| / |A ∪ B|"
    caption = (f"Each cell: the weights both tasks' masks keep over the weights either keeps (1: the same "
               f"subnetwork, 0: nothing shared). Over all {len(tasks)} tasks' masks at once the ratio is "
               f"{report['global']:.3f}.")
    if len(tasks) > POOLED_TASKS:
        size = math.ceil(len(tasks) / POOLED_TASKS)
        blocks = [(start, min(start + size, len(tasks))) for start in range(0, len(tasks), size)]
        padded = np.full((len(blocks) * size,) * 2, np.nan)
        padded[: len(tasks), : len(tasks)] = pairwise
        z = np.nanmean(padded.reshape(len(blocks), size, len(blocks), size), axis=(1, 3)).round(4)
        names = [f"{tasks[a]} .. {tasks[b - 1]}" for a, b in blocks]
        hover = [[f"tasks {a + 1}-{b} ({names[i]})<br>x tasks {c + 1}-{d} ({names[j]})<br>mean overlap ratio "
                  f"{z[i][j]:.3f}" for j, (c, d) in enumerate(blocks)] for i, (a, b) in enumerate(blocks)]
        labels = [f"{a + 1}-{b}" for a, b in blocks]
        figure = go.Figure(go.Heatmap(z=z, x=labels, y=labels, zmin=0, zmax=1, colorscale="Viridis",
                                      hovertext=np.asarray(hover), hoverinfo="text", colorbar={"title": "overlap"}))
        title += f" (blocks of {size} tasks)"
        caption += f" With this many tasks a cell is the mean over a block of {size} consecutive tasks."
    else:
        inter = report["intersections"]
        hover = [[f"{tasks[i]} & {tasks[j]}<br>overlap ratio {pairwise[i][j]:.3f}<br>"
                  f"shared weights {inter[i][j]:,}<br>{tasks[i]}: {inter[i][i]:,} · {tasks[j]}: {inter[j][j]:,}"
                  for j in range(len(tasks))] for i in range(len(tasks))]
        figure = go.Figure(go.Heatmap(
            z=pairwise, x=tasks, y=tasks, zmin=0, zmax=1, colorscale="Viridis",
            text=[[f"{v:.2f}" for v in row] for row in pairwise], texttemplate=cell_labels(len(tasks)),
            hovertext=hover, hoverinfo="text", colorbar={"title": "overlap"}))
    # square cells by shrinking the plot's area, not by widening its axes' range: the labels stay next to
    # the cells, with no empty gridded band between them
    figure.update_layout(title=title, height=task_rows_height(len(tasks)), meta={"caption": caption},
                         yaxis={"autorange": "reversed", "scaleanchor": "x", "constrain": "domain", "showgrid": False},
                         xaxis={"constrain": "domain", "showgrid": False})
    return figure


POOLED_TASKS = 150  # past this many tasks, a task x task heatmap averages blocks of tasks

MANY_TASKS = 25  # beyond this, heatmaps drop their cell labels and stop growing (hover still tells)


def cell_labels(n_tasks: int) -> str | None:
    """A per-task heatmap's cell text template: the values, or none past MANY_TASKS rows."""
    return "%{text}" if n_tasks <= MANY_TASKS else None


def task_rows_height(n_tasks: int) -> int:
    """Figure height for one row per task: 45 px rows for a few tasks, at most 900 px for many."""
    return min(120 + 45 * n_tasks, 900)


# how an overlap report's masks are grouped: (its part, each part's label, a part's name, what the parts are)
GROUPINGS = {
    "layer": ("per_layer", lambda part: layer_label(part["layer"]), "block",
              "body block (and the shared encoder, where it is pruned too)"),
    "group": ("per_group", lambda part: part["group"], "kind of module",
              "kind of module of the checkpoint's target weights (query, key, value, attention output, feed-forward)"),
}


def density_heatmap(report: dict, tasks: list[str], by: str = "layer") -> go.Figure:
    """Fraction of each block's (or each kind of module's) weights that each task keeps."""
    key, label, name, what = GROUPINGS[by]
    z = [[part["density"][t] for part in report[key]] for t in range(len(tasks))]
    figure = go.Figure(go.Heatmap(z=z, x=[label(part) for part in report[key]], y=tasks, zmin=0, zmax=1,
                                  colorscale="Blues", text=[[f"{v:.2f}" for v in row] for row in z],
                                  texttemplate=cell_labels(len(tasks)), colorbar={"title": "density"}))
    figure.update_layout(title=f"Density per {name}", yaxis={"autorange": "reversed"},
                         height=task_rows_height(len(tasks)), meta={"caption": (
                             f"The share of each {what}'s masked weights that each task's mask keeps.")})
    return figure


# a run's last phase, as logged
FINAL_PHASES = {"train": "multi-task training", "finetune": "fine-tuning", "adapt": "domain adaptation"}


MANY_LINES = 12  # past this many tasks of one metric, curves show the spread over tasks, not a line each
METRIC_AXES = {"accuracy": {"title": "accuracy"}, "rmse": {"title": "RMSE (log)", "type": "log"}}


def training_curves(records: list[dict], shown: list[str] = ()) -> go.Figure:
    """Dev metric per task over global steps during the run's final phase (multi-task training, or
    the fine-tuning of a retrained run), a panel per metric (RMSE on a log axis). Past MANY_LINES
    tasks of a metric, its panel draws the median over tasks and the band of the middle 80%, plus a
    line for each task in `shown`."""
    from plotly.subplots import make_subplots

    phase = next((p for p in FINAL_PHASES if any(r.get("phase") == p for r in records)), "train")
    curves: dict[str, dict[str, list]] = {}  # metric -> task -> [(step, value)]
    for r in records:
        if r.get("phase") == phase and r.get("split") == "dev":
            curves.setdefault(r["metric"], {}).setdefault(r["task"], []).append((r["step"], r["value"]))
    metrics = sorted(curves) or ["accuracy"]
    figure = make_subplots(rows=1, cols=len(metrics), subplot_titles=[
        f"{m}: {len(curves.get(m, {}))} tasks" for m in metrics], horizontal_spacing=0.08)
    for col, metric in enumerate(metrics, start=1):
        tasks = curves.get(metric, {})
        many = len(tasks) > MANY_LINES
        if many:
            steps = sorted({step for points in tasks.values() for step, _ in points})
            at = {task: dict(points) for task, points in tasks.items()}
            spread = [np.percentile([v[s] for v in at.values() if s in v], [10, 50, 90]) for s in steps]
            low, median, high = (list(column) for column in zip(*spread))
            figure.add_scatter(x=steps + steps[::-1], y=high + low[::-1], fill="toself", mode="lines",
                               line={"width": 0}, fillcolor="rgba(31,119,180,0.2)", hoverinfo="skip",
                               name=f"{metric}: middle 80% of tasks", row=1, col=col)
            figure.add_scatter(x=steps, y=median, mode="lines", line={"color": "#1f77b4", "width": 2},
                               name=f"{metric}: median of {len(tasks)} tasks", row=1, col=col)
        for task, points in tasks.items():
            if not many or task in shown:
                figure.add_scatter(x=[s for s, _ in points], y=[v for _, v in points], mode="lines+markers",
                                   name=f"{task} ({metric})", row=1, col=col)
        figure.update_yaxes(**METRIC_AXES.get(metric, {"title": metric}), row=1, col=col)
        figure.update_xaxes(title="step", row=1, col=col)
    figure.update_layout(title=f"Dev metric during {FINAL_PHASES[phase]}", height=380,
                         legend={"orientation": "h", "y": -0.25}, meta={"caption": (
                             "Each task's metric on its dev split at each evaluation, a panel per metric (accuracy: "
                             f"higher is better; RMSE: lower, on a log axis). Past {MANY_LINES} tasks a panel shows "
                             "the median over tasks and the band of the middle 80%.")})
    return figure


def layer_overlap_chart(report: dict, by: str = "layer") -> go.Figure:
    """Overlap ratio of all tasks per body block (or kind of module), each bar labelled (so that
    disjoint masks read 0.00, not an empty chart)."""
    key, label, name, what = GROUPINGS[by]
    figure = go.Figure(go.Bar(x=[label(part) for part in report[key]], y=[part["global"] for part in report[key]],
                              name="overlap ratio, all tasks", texttemplate="%{y:.2f}", textposition="outside"))
    figure.update_layout(title=f"Overlap ratio per {name}", yaxis={"range": [0, 1]}, height=320, meta={"caption": (
        f"Per {what}, the weights every task's mask keeps over the weights any task's mask keeps.")})
    return figure


def subset_chart(report: dict, top: int = 15) -> go.Figure:
    """How many weights each exact set of tasks uses (and no other task), largest first."""
    subsets = [s for s in report["subsets"] if s["tasks"]][:top]
    # distinct sets keep distinct labels: a long set is numbered and named by its count and first tasks
    labels = [set_label(s["tasks"]) if len(s["tasks"]) <= 4 else f"#{i + 1}: {set_label(s['tasks'])}"
              for i, s in enumerate(subsets)]
    hover = [", ".join(s["tasks"][:40]) + (f" and {len(s['tasks']) - 40} more" if len(s["tasks"]) > 40 else "")
             for s in subsets]
    figure = go.Figure(go.Bar(x=[s["count"] for s in subsets], y=labels, orientation="h", hovertext=hover,
                              hoverinfo="text+x"))
    unused = next((s["count"] for s in report["subsets"] if not s["tasks"]), 0)
    total = report.get("subset_total", len(report["subsets"]))
    figure.update_layout(title=f"Weights used by exactly these tasks (the largest {len(subsets)} of {total:,} sets; "
                               f"{unused:,} weights used by none)",
                         yaxis={"autorange": "reversed"}, height=160 + 24 * len(subsets), meta={"caption": (
                             "Each bar: how many weights are kept by exactly that set of tasks and by no other task "
                             "(a partition of the weights; hover names every task of a long set).")})
    return figure


def mask_image(category, labels: list[str], name: str, groups=None) -> go.Figure:
    """One weight matrix, each weight coloured by the set of tasks that use it; a convolution's
    kernel [out, in, k, k] is drawn a row per output channel, its inputs' kernel positions side by side.
    `groups` (the block's WeightGroups: attention heads) label and divide runs of rows or columns."""
    import plotly.express as px

    category = np.asarray(category)
    shape = category.shape
    category = category.reshape(shape[0], -1)

    palette = ["#f2f2f2"] + px.colors.qualitative.Bold
    n = len(labels)
    scale = []
    for i in range(n):  # a discrete colour scale: category i owns [i/n, (i+1)/n]
        colour = palette[i % len(palette)]
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    figure = go.Figure(go.Heatmap(
        z=category, zmin=-0.5, zmax=n - 0.5, colorscale=scale,
        customdata=[[labels[c] for c in row] for row in category],
        hovertemplate="row %{y}, column %{x}: %{customdata}<extra></extra>",
        colorbar={"tickvals": list(range(n)), "ticktext": labels, "title": "used by"}))
    columns = "input" if len(shape) == 2 else f"input x kernel position ({' x '.join(map(str, shape[1:]))})"
    yaxis, xaxis = {"autorange": "reversed", "title": "output channel"}, {"title": columns}
    if groups is not None:
        axis = yaxis if groups.axis == 0 else xaxis
        axis.update(tickvals=[(i + 0.5) * groups.size - 0.5 for i in range(len(groups.labels))],
                    ticktext=list(groups.labels), title=None)
        for i in range(1, len(groups.labels)):
            (figure.add_hline if groups.axis == 0 else figure.add_vline)(i * groups.size - 0.5, line_color="black",
                                                                          line_width=1)
    figure.update_layout(title=f"{name}: which tasks use each weight", height=min(900, 200 + 3 * len(category)),
                         yaxis=yaxis, xaxis=xaxis, meta={"caption": (
                             "One weight matrix, each weight coloured by the set of tasks whose masks keep it "
                             "(the most common sets; the rest as other task sets).")})
    return figure


def group_density_heatmap(density, tasks: list[str], groups, name: str) -> go.Figure:
    """Fraction of each unit's weights (an attention head's rows or columns) that each task keeps."""
    density = np.asarray(density)
    figure = go.Figure(go.Heatmap(z=density, x=list(groups.labels), y=tasks, zmin=0, zmax=1, colorscale="Blues",
                                  text=[[f"{v:.2f}" for v in row] for row in density],
                                  texttemplate=cell_labels(len(tasks)), colorbar={"title": "density"}))
    figure.update_layout(title=f"{name}: density per head", yaxis={"autorange": "reversed"},
                         height=task_rows_height(len(tasks)), meta={"caption": (
                             "The share of each attention head's weights in this matrix that each task's mask "
                             "keeps.")})
    return figure


ATTRIBUTION_CAPTION = ("How much each input moves the task's output, by the method picked above (Integrated "
                       "Gradients: gradients summed along the path from an all-zero input, adding up to the "
                       "output's change). Red raises the prediction, blue lowers it; one scale for all tasks.")


def attribution_grid(image, attributions: dict, captions: dict) -> go.Figure:
    """The input beside each task's attribution map, square pixels, every map on one colour scale
    (red: pushes towards the prediction, blue: away), so the tasks' magnitudes compare."""
    from plotly.subplots import make_subplots

    names = list(attributions)
    figure = make_subplots(rows=1, cols=len(names) + 1, horizontal_spacing=0.02,
                           subplot_titles=["input"] + [f"{t}<br>{captions[t]}" for t in names])
    figure.add_trace(go.Heatmap(z=image, colorscale="Greys", reversescale=True, showscale=False), row=1, col=1)
    bound = max(max(float(np.abs(a).max()) for a in attributions.values()), 1e-12)
    for i, task in enumerate(names, start=2):
        figure.add_trace(go.Heatmap(z=attributions[task], colorscale="RdBu", reversescale=True, zmin=-bound,
                                    zmax=bound, showscale=i == len(names) + 1, colorbar={"title": "attribution"},
                                    hovertemplate="%{z:.3g}<extra></extra>"), row=1, col=i)
    for i in range(1, len(names) + 2):  # one pixel of the input is a square on screen
        figure.update_yaxes(scaleanchor=f"x{i if i > 1 else ''}", row=1, col=i)
    figure.update_yaxes(autorange="reversed", showticklabels=False)
    figure.update_xaxes(showticklabels=False)
    figure.update_layout(title="The same input, attributed for each task (one colour scale for all)", height=330,
                         meta={"caption": ATTRIBUTION_CAPTION})
    return figure


def vector_attribution_chart(attributions: dict, captions: dict) -> go.Figure:
    """Each task's attribution of every input feature, the tasks' bars side by side per feature."""
    figure = go.Figure()
    for task, values in attributions.items():
        values = np.asarray(values).ravel()
        figure.add_bar(x=[f"feature {i}" for i in range(len(values))], y=values, name=f"{task} ({captions[task]})")
    figure.update_layout(barmode="group", title="The same input, attributed for each task (per feature)", height=320,
                         yaxis_title="attribution", meta={"caption": ATTRIBUTION_CAPTION})
    return figure


def token_attribution_chart(tokens: list[str], attributions: dict, captions: dict,
                            highlight: int | None = None) -> go.Figure:
    """Each task's attribution of every real token of one sequence, the tokens as column labels, on
    one colour scale shared by all tasks (red: pushes towards the prediction, blue: away)."""
    names = list(attributions)
    z = np.stack([np.asarray(attributions[t], dtype=float) for t in names])
    bound = max(float(np.abs(z).max()), 1e-12)
    labels = [html.escape(token) for token in tokens]  # token text is data: never markup in a tick label
    figure = go.Figure(go.Heatmap(
        z=z, x=list(range(len(tokens))), y=[f"{t} ({captions[t]})" for t in names], colorscale="RdBu",
        reversescale=True, zmin=-bound, zmax=bound, colorbar={"title": "attribution"},
        customdata=np.array([labels] * len(names)), hovertemplate="%{customdata}: %{z:.3g}<extra>%{y}</extra>"))
    figure.update_xaxes(tickvals=list(range(len(tokens))), ticktext=labels, tickangle=-60, tickfont={"size": 10})
    figure.update_yaxes(autorange="reversed")  # the first task on top, as in the task picker
    if highlight is not None:
        figure.add_vline(x=highlight, line={"color": "#222222", "width": 1, "dash": "dot"})
    figure.update_layout(title="The same sequence, attributed for each task (per token, summed over its embedding)",
                         height=180 + 40 * len(names), meta={"caption": ATTRIBUTION_CAPTION})
    return figure


def block_importance_chart(importance: dict) -> go.Figure:
    """Per task, the layer conductance through each body block's update."""
    figure = go.Figure()
    for task, values in importance.items():
        figure.add_bar(x=[f"block {b}" for b in range(len(values))], y=values, name=task)
    figure.update_layout(barmode="group", title="Module importance: conductance through each block", height=360,
                         meta={"caption": (
                             "Conductance: how much of each task's output (against an all-zero input) flows through "
                             "each body block's update, the mean absolute layer conductance over these inputs.")})
    return figure


def bar_chart(values: dict, title: str, x_title: str, y_title: str, caption: str, top: int = 30) -> go.Figure:
    """Horizontal bars for the `top` largest values, largest first."""
    items = list(values.items())[:top]
    figure = go.Figure(go.Bar(x=[v for _, v in items], y=[str(k) for k, _ in items], orientation="h"))
    figure.update_layout(title=title, xaxis={"title": x_title}, yaxis={"title": y_title, "autorange": "reversed"},
                         height=160 + 22 * len(items), meta={"caption": caption})
    return figure


def cosine_heatmap(matrix: list[list[float]], tasks: list[str], where: str) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=matrix, x=tasks, y=tasks, zmin=-1, zmax=1, colorscale="RdBu",
                                  text=[[f"{v:.2f}" for v in row] for row in matrix],
                                  texttemplate=cell_labels(len(tasks)),
                                  hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
    figure.update_layout(title=f"Cosine similarity of the task vectors ({where})", yaxis={"autorange": "reversed"},
                         height=task_rows_height(len(tasks)), meta={"caption": (
                             "1: two tasks moved the weights the same way; 0: their changes are orthogonal (merging "
                             "them adds without interfering); below 0: they pull against each other.")})
    return figure


def norms_heatmap(norms: list[list[float]], tasks: list[str], layers: list[str]) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=norms, x=layers, y=tasks, colorscale="Viridis",
                                  hovertemplate="%{y}, %{x}: %{z:.4g}<extra></extra>"))
    figure.update_layout(title="How far each task moved each layer (L2 norm of its change)",
                         yaxis={"autorange": "reversed"}, height=task_rows_height(len(tasks)), meta={"caption": (
                             "The size of each task's change per layer: where a task's fine-tune (or adapter) did its "
                             "work.")})
    return figure
