"""Binary targets over a data set's ten classes, for task sets of any size (the scale runs' many
tasks): 'A-vs-B' keeps the rows of classes A and B (label 1: B), 'in-ABC' labels whether the class
is one of those given (all rows). Shared by the built-in data sets of ten classes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lsmn_core.errors import DataError

CLASS_SUBSETS = "'A-vs-B' (classes A and B only, one against the other) or 'in-ABC' (whether the class is A, B or C)"


def class_subset(target) -> tuple[set[int] | None, Callable[[np.ndarray], np.ndarray]] | None:
    """The kept classes (None: all rows) and the labelling of a class-subset target; None when
    `target` is not one."""
    text = str(target)
    first, _, second = text.partition("-vs-")
    if second and first.isdigit() and second.isdigit() and len(first) == len(second) == 1 and first != second:
        return {int(first), int(second)}, lambda c: (c == int(second)).astype(np.int64)
    members = text[3:] if text.startswith("in-") else ""
    if members.isdigit() and 0 < len(set(members)) == len(members) < 10:
        chosen = np.array([int(c) for c in members])
        return None, lambda c: np.isin(c, chosen).astype(np.int64)
    return None


def subset_splits(splits: dict[str, tuple[np.ndarray, np.ndarray]], target, dataset: str,
                  known: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits (x, class) of a class-subset target: the rows whose class it keeps, labelled by it;
    a DataError listing the data set's `known` targets when `target` is none."""
    subset = class_subset(target)
    if subset is None:
        raise DataError(f"{dataset} has no target '{str(target)[:40]}' (known: {known}, or {CLASS_SUBSETS})")
    kept, label = subset
    rows = {k: np.isin(c, list(kept)) if kept else slice(None) for k, (_, c) in splits.items()}
    return {k: (x[rows[k]], label(c[rows[k]])) for k, (x, c) in splits.items()}
