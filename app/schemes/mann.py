"""The mann scheme in the app: its disjoint masks are drawn by the generic Masks page; on a
checkpoint (PackNet) the Overview shows how the tasks were packed, each task's share and what its
pruning cost on dev; its routing is edited mask by mask."""

import plotly.graph_objects as go

from app.figures import task_rows_height
from app.layout import chart, task_columns
from app.mask_editor import mask_editor
from app.schemes.view import SchemeView


def packing_figure(packnet: dict) -> go.Figure:
    """Per task, in packing order: the share of each target it found owned by earlier tasks, the share
    it kept, and what it left free."""
    tasks = list(packnet)
    earlier = [1 - r["free_before"] for r in packnet.values()]
    owned = [r["owned"] for r in packnet.values()]
    free = [r["free_before"] - r["owned"] for r in packnet.values()]
    figure = go.Figure([go.Bar(y=tasks, x=values, name=name, orientation="h", marker={"color": colour},
                               hovertemplate=f"%{{y}}: %{{x:.1%}} {name}<extra></extra>")
                        for values, name, colour in ((earlier, "owned by earlier tasks", "#9aa5b1"),
                                                     (owned, "its own", "#2f6fdf"), (free, "left free", "#e4e7eb"))])
    figure.update_layout(title="How PackNet packed the tasks", barmode="stack", legend={"traceorder": "normal"},
                         xaxis={"title": "share of the target weights", "tickformat": ".0%", "range": [0, 1]},
                         yaxis={"autorange": "reversed"}, height=task_rows_height(len(tasks)) + 60,
                         meta={"caption": (
                             "Tasks in the config's order. Each trained every free weight, kept its share of "
                             "largest magnitude and froze it; what it did not keep went back to the pretrained "
                             "values for the next task. A task's network is its own weights and the earlier "
                             "tasks' (the grey), the rest masked out: later tasks never change it.")})
    return figure


def pruning_cost_figure(packnet: dict) -> go.Figure:
    """Per task: its dev metric on every free weight, and on its share after retraining."""
    tasks = list(packnet)
    figure = go.Figure([go.Bar(y=tasks, x=[r[key] for r in packnet.values()], name=name, orientation="h",
                               hovertemplate=f"%{{y}}, {name}: %{{x:.4f}}<extra></extra>")
                        for key, name in (("dev_before_pruning", "on every free weight"),
                                          ("dev", "on its share, retrained"))])
    figure.update_layout(title="What pruning to its share cost each task (dev)", barmode="group",
                         xaxis={"title": "dev metric"}, yaxis={"autorange": "reversed"},
                         height=task_rows_height(len(tasks)) + 60, meta={"caption": (
                             "A task trained on every weight it found free, then kept its share: the gap between the "
                             "bars is what packing it into less of the network cost.")})
    return figure


def overview(run) -> bool:
    packnet = run.summary().get("search", {}).get("packnet")
    if not packnet:
        return False
    left, right = task_columns(len(packnet))
    chart(left, packing_figure(packnet), "packing")
    chart(right, pruning_cost_figure(packnet), "packing_cost")
    return True


VIEW = SchemeView(overview=overview, editor=mask_editor)
