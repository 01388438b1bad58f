"""The registry of merge methods (entry point group `lsmn.merges`): how `lsmn merge` combines the
task vectors of fine-tunes of one checkpoint. Filled by the merge methods of task vectors."""

from __future__ import annotations

from lsmn_core.plugins import Registry


def _check_merge(name: str, obj) -> str | None:
    return None if callable(obj) else f"{obj!r:.80} is not callable"


MERGES: Registry = Registry("lsmn.merges", "merge method", _check_merge)
