"""Registry of sharing schemes: kind name -> (scheme class, options dataclass), and the model a
config's scheme builds.

A scheme is one package under lsmn_core/schemes/ (its options, parameterisation, routing search and
routing-document part); adding one is a folder and a `register` line. Nothing outside a scheme's
package names it: everything else reaches schemes through this registry and the interface in
lsmn_core.schemes.base.
"""

from __future__ import annotations

import os

import torch

from lsmn_core.errors import ConfigError
from lsmn_core.network.model import MultitaskModel
from lsmn_core.schemes.base import SharingScheme
from lsmn_core.schemes.hard import Hard, HardOptions
from lsmn_core.schemes.hierarchical import Hierarchical, HierarchicalOptions
from lsmn_core.schemes.hyper import Hyper, HyperOptions
from lsmn_core.schemes.independent import Independent, IndependentOptions
from lsmn_core.schemes.mann import Mann, MannOptions
from lsmn_core.schemes.mixture import Mixture, MixtureOptions
from lsmn_core.schemes.moe import Moe, MoeOptions
from lsmn_core.schemes.soft import Soft, SoftOptions
from lsmn_core.schemes.sparse import Sparse, SparseOptions
from lsmn_core.data.tasks import TaskSpec

SCHEMES: dict[str, tuple[type[SharingScheme], type]] = {
    scheme.kind: (scheme, options) for scheme, options in (
        (Independent, IndependentOptions), (Hard, HardOptions), (Sparse, SparseOptions), (Mixture, MixtureOptions),
        (Mann, MannOptions), (Moe, MoeOptions), (Hyper, HyperOptions), (Hierarchical, HierarchicalOptions),
        (Soft, SoftOptions))}
DEFAULT_KIND = Hard.kind  # a config without a scheme shares one body between all its tasks


def register(scheme: type[SharingScheme], options: type) -> None:
    """Make a scheme known by its `kind` (its options dataclass has a `kind` field of that value)."""
    SCHEMES[scheme.kind] = (scheme, options)


def _lookup(kind) -> tuple[type[SharingScheme], type]:
    if not isinstance(kind, str) or kind not in SCHEMES:
        raise ConfigError(f"scheme.kind: unknown scheme {kind!r} (known: {', '.join(SCHEMES)})")
    return SCHEMES[kind]


def scheme_options(kind) -> type:
    return _lookup(kind)[1]


def scheme_class(kind) -> type[SharingScheme]:
    return _lookup(kind)[0]


def check_config(config) -> None:
    """A parsed run config against its scheme: a task's own `architecture` only where the scheme
    builds per-task networks, then the scheme's own checks."""
    scheme = scheme_class(config.scheme.kind)
    for i, task in enumerate(config.tasks):
        if task.architecture is not None and not scheme.own_architectures:
            takers = " or ".join(kind for kind, (s, _) in SCHEMES.items() if s.own_architectures)
            raise ConfigError(f"tasks[{i}].architecture: only the {takers} scheme gives tasks their own architecture")
    scheme.check_config(config)


def build_model(specs: list[TaskSpec], config) -> MultitaskModel:
    """A freshly initialised model of `config`, built by its scheme; seeded by config.seed, so equal
    configs give equal weights."""
    torch.manual_seed(config.seed)
    return scheme_class(config.scheme.kind).build_network(specs, config)


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
