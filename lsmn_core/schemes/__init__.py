"""The registry of sharing schemes (entry point group `lsmn.schemes`): kind -> scheme class, whose
`options_class` is its options dataclass; and the model a config's scheme builds.

A scheme is one package (its options, parameterisation, routing search and routing-document part);
the built-in ones are under lsmn_core/schemes/ and registered as entry points of the Studio's own
package, exactly as a plugin registers its own. Nothing outside a scheme's package names it:
everything else reaches schemes through this registry and the interface in lsmn_core.schemes.base.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch

from lsmn_core.errors import ConfigError
from lsmn_core.network.model import MultitaskModel
from lsmn_core.data.tasks import TaskSpec
from lsmn_core.plugins import Registry
from lsmn_core.pretrained.network import build_pretrained
from lsmn_core.schemes.base import SharingScheme

DEFAULT_KIND = "hard"  # a config without a scheme shares one body between all its tasks


def _check_scheme(name: str, obj) -> str | None:
    """What keeps `obj` from being the scheme `name` (None: nothing)."""
    if not (isinstance(obj, type) and issubclass(obj, SharingScheme)):
        return f"{obj!r:.80} is not a SharingScheme class"
    if getattr(obj, "kind", None) != name:
        return f"its kind is {getattr(obj, 'kind', None)!r:.40}, not {name!r}, the name it is registered as"
    options = getattr(obj, "options_class", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)
            and "kind" in {f.name for f in dataclasses.fields(options)}):
        return "its options_class must be a dataclass with a `kind` field"
    return None


SCHEMES: Registry[type[SharingScheme]] = Registry("lsmn.schemes", "scheme", _check_scheme)


def register(scheme: type[SharingScheme]) -> None:
    """Make a scheme class known in this process by its `kind` (its options_class has a `kind` field
    of that value); an installed package registers one through the `lsmn.schemes` entry point group."""
    SCHEMES.register(scheme.kind, scheme)


def scheme_class(kind) -> type[SharingScheme]:
    return SCHEMES.get(kind, "scheme.kind")


def scheme_options(kind) -> type:
    return scheme_class(kind).options_class


def kinds_where(has: Callable[[type[SharingScheme]], bool]) -> list[str]:
    """The kinds of the schemes that load and satisfy `has` (for messages and baseline lists)."""
    kinds = []
    for kind in SCHEMES.names():
        try:
            if has(SCHEMES.get(kind)):
                kinds.append(kind)
        except ConfigError:  # a plugin that fails to load, or a name two claim: listed by `lsmn plugins`
            continue
    return kinds


def check_config(config) -> None:
    """A parsed run config against its scheme: a checkpoint only where the scheme works on one, a
    task's own `architecture` only where the scheme builds per-task networks, then the scheme's own
    checks."""
    scheme = scheme_class(config.scheme.kind)
    if config.model.pretrained is not None and scheme.on_checkpoint is None:
        takers = ", ".join(kinds_where(lambda s: s.on_checkpoint is not None))
        raise ConfigError(f"scheme.kind: the {scheme.kind} scheme does not work on a pretrained network yet "
                          f"(model.pretrained); these do: {takers}")
    for i, task in enumerate(config.tasks):
        if task.architecture is not None and not scheme.own_architectures:
            takers = " or ".join(kinds_where(lambda s: s.own_architectures))
            raise ConfigError(f"tasks[{i}].architecture: only the {takers} scheme gives tasks their own architecture")
    scheme.check_config(config)


def build_model(specs: list[TaskSpec], config, pretrained: dict | None = None) -> MultitaskModel:
    """A freshly initialised model of `config`, built by its scheme; seeded by config.seed, so equal
    configs give equal weights. A config with a checkpoint builds the network over it: `pretrained`
    is a stored run's record of it (run.json's "pretrained"), which its checkpoint must match, and
    which alone builds the run's skeleton on the meta device."""
    torch.manual_seed(config.seed)
    scheme = scheme_class(config.scheme.kind)
    if config.model.pretrained is None:
        return scheme.build_network(specs, config)
    if scheme.on_checkpoint is None:
        raise ConfigError(f"the {scheme.kind} scheme does not work on a pretrained network yet")
    return build_pretrained(scheme.checkpoint_scheme(config.scheme), specs, config, pretrained)


def check_model_size(specs: list[TaskSpec], config, bytes_per_parameter: int, purpose: str,
                     skeleton: MultitaskModel | None = None) -> int:
    """The parameter count of `config`'s model, built on the meta device (no memory is allocated),
    or of `skeleton`, such a build the caller has already; ConfigError, with the estimate, when
    `bytes_per_parameter` each would not fit in this machine's memory."""
    if skeleton is None:
        with torch.device("meta"):
            skeleton = build_model(specs, config)
    count = sum(p.numel() for p in skeleton.parameters())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if count * bytes_per_parameter > memory:
        raise ConfigError(f"model: {count:,} parameters need about {count * bytes_per_parameter / 2**30:,.1f} GiB "
                          f"to {purpose}, more than this machine's {memory / 2**30:,.1f} GiB; make model.width, "
                          "model.depth or the scheme's counts smaller")
    return count
