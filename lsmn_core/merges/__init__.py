"""The registry of merge methods (entry point group `lsmn.merges`): how `lsmn merge` and a task
vectors run's recipe combine the task vectors of fine-tunes of one checkpoint. An entry is a
MergeMethod class (method.py) registered under its name: the built-ins are task arithmetic, TIES,
DARE (with a sum or TIES), TALL masks and consensus merging, and the merges of each weight matrix by
its singular value decompositions (matrix.py: TSV-M, Iso-C, Iso-CTS), one module each."""

from __future__ import annotations

from lsmn_core.merges.method import MergeMethod
from lsmn_core.plugins import Registry


def _check_merge(name: str, obj) -> str | None:
    if not (isinstance(obj, type) and issubclass(obj, MergeMethod)):
        return f"{obj!r:.80} is not a MergeMethod class (lsmn_core/merges/method.py)"
    return None if obj.name == name else f"its name is {obj.name!r}, registered as {name!r}"


MERGES: Registry = Registry("lsmn.merges", "merge method", _check_merge)
