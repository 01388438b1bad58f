"""The registry of pretrained loaders (entry point group `lsmn.pretrained`): how a config's
`model.pretrained` opens a checkpoint of one format. Filled by the loaders of pretrained networks."""

from __future__ import annotations

from lsmn_core.plugins import Registry


def _check_loader(name: str, obj) -> str | None:
    return None if callable(obj) else f"{obj!r:.80} is not callable"


LOADERS: Registry = Registry("lsmn.pretrained", "pretrained loader", _check_loader)
