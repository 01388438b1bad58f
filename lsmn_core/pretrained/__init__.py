"""The registry of pretrained loaders (entry point group `lsmn.pretrained`): how a config's
`model.pretrained` opens a checkpoint of one format. An entry is a loader class (the Loader of
checkpoint.py) registered under the key that names its format in the mapping: `{hf: FOLDER}` (a
Hugging Face folder, huggingface.py), `{class: ..., args: ..., weights: FILE}` (a user's module,
module.py), and a plugin's own."""

from __future__ import annotations

from lsmn_core.errors import ConfigError
from lsmn_core.plugins import Registry


def _check_loader(name: str, obj) -> str | None:
    missing = [m for m in ("source", "weight_files", "open", "save") if not callable(getattr(obj, m, None))]
    if not isinstance(obj, type) or missing:
        return f"{obj!r:.80} is not a loader class (it needs {', '.join(missing) or 'to be a class'})"
    return None


LOADERS: Registry = Registry("lsmn.pretrained", "pretrained loader", _check_loader)


def loader_of(pretrained):
    """The loader a `model.pretrained` mapping names by its one key of a registered loader, built
    from the mapping (its options checked)."""
    if not isinstance(pretrained, dict):
        raise ConfigError("model.pretrained: expected a mapping such as {hf: FOLDER} or {class: ..., weights: FILE}")
    names = [key for key in pretrained if key in LOADERS]
    if len(names) != 1:
        raise ConfigError(f"model.pretrained: give exactly one of the loaders {', '.join(LOADERS.names())} "
                          f"(got keys {', '.join(map(str, pretrained)) or 'none'})")
    return LOADERS.get(names[0], "model.pretrained")(pretrained)
