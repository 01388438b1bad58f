"""Comparing finished runs: per task, each run's test metric and the parameters that task uses."""

from __future__ import annotations


def comparison_rows(runs) -> list[dict]:
    """One row per task (in first-seen order): {task, metric, <run id>: {test, dev, active}}."""
    rows: dict[str, dict] = {}
    for run in runs:
        summary = run.summary()
        for task, m in summary["metrics"].items():
            row = rows.setdefault(task, {"task": task, "metric": m["metric"]})
            row[run.id] = {"test": m["test"], "dev": m["dev"], "active": summary["params"]["active"][task]}
    return list(rows.values())


def _thousands(n: int) -> str:
    return f"{n / 1000:.1f}k"


def markdown_table(runs) -> str:
    """A Markdown table: tasks down, runs across, 'test metric (active parameters)' in each cell."""
    header = ["task", "metric"] + [f"{r.id} ({r.scheme})" for r in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison_rows(runs):
        cells = [row["task"], row["metric"]]
        for run in runs:
            entry = row.get(run.id)
            cells.append(f"{entry['test']:.3f} ({_thousands(entry['active'])})" if entry else "-")
        lines.append("| " + " | ".join(cells) + " |")
    totals = ["total parameters", ""] + [_thousands(r.summary()["params"]["total"]) for r in runs]
    lines.append("| " + " | ".join(totals) + " |")
    return "\n".join(lines)
