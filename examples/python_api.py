"""Bring your own arrays from Python: two tasks on one synthetic feature set under sparse sharing,
one with a given test split, then an edited routing evaluated against the stored one.

    python examples/python_api.py [RUNS_FOLDER]      (default: runs)

The run is an ordinary run directory: `lsmn show RUN` and the app open it, and because the arrays
are kept in RUNS_FOLDER/.data/, `lsmn eval` and Retrain work on it later too.
"""

import sys

from sklearn.datasets import make_classification

from lsmn_core import Task, train
from lsmn_core.store.routing import edit_masks

CONFIG = {
    "name": "python-api",
    "model": {"width": 32, "depth": 2},
    "scheme": {"kind": "sparse", "prune_rate": 0.3, "min_density": 0.3, "round_steps": 60, "warmup_steps": 60},
    "train": {"steps": 300, "batch_size": 64, "eval_every": 100, "device": "cpu"},
}


def main(out: str = "runs") -> None:
    X, y = make_classification(n_samples=700, n_features=16, n_informative=6, n_classes=3, random_state=0)
    related = (y == 2).astype(int)  # a coarser question about the same classes
    tasks = [Task("classes", train=(X[:500], y[:500]), test=(X[500:], y[500:])),  # the last 200 rows: its test set
             Task("is_two", train=(X, related))]  # dev and test drawn from its rows
    run = train(CONFIG, tasks=tasks, out=out)
    print(f"run {run.path}")
    for task, m in run.summary()["metrics"].items():
        print(f"  {task:8s} test {m['metric']} {m['test']:.3f}")

    doc, arrays = run.routing()  # the edit: `is_two` takes the masks of `classes` in block 0
    edited = edit_masks(doc, arrays, {("is_two", 0): "copy:classes"})
    result = run.evaluate(routing=(doc, edited), device="cpu")
    for task, m in result["metrics"].items():
        print(f"  under the edit, {task:8s} test {m['test']:.3f} (change {m['test_delta']:+.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
