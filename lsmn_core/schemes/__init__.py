"""Registry of sharing schemes: kind name -> (scheme class, options dataclass)."""

from lsmn_core.errors import ConfigError
from lsmn_core.schemes.base import SharingScheme
from lsmn_core.schemes.hard import Hard, HardOptions
from lsmn_core.schemes.hyper import Hyper, HyperOptions
from lsmn_core.schemes.independent import Independent, IndependentOptions
from lsmn_core.schemes.mann import Mann, MannOptions
from lsmn_core.schemes.mixture import Mixture, MixtureOptions
from lsmn_core.schemes.moe import Moe, MoeOptions
from lsmn_core.schemes.sparse import Sparse, SparseOptions

SCHEMES: dict[str, tuple[type[SharingScheme], type]] = {
    "independent": (Independent, IndependentOptions),
    "hard": (Hard, HardOptions),
    "sparse": (Sparse, SparseOptions),
    "mixture": (Mixture, MixtureOptions),
    "mann": (Mann, MannOptions),
    "moe": (Moe, MoeOptions),
    "hyper": (Hyper, HyperOptions),
}


def _lookup(kind) -> tuple[type[SharingScheme], type]:
    if not isinstance(kind, str) or kind not in SCHEMES:
        raise ConfigError(f"scheme.kind: unknown scheme {kind!r} (known: {', '.join(SCHEMES)})")
    return SCHEMES[kind]


def scheme_options(kind) -> type:
    return _lookup(kind)[1]


def scheme_class(kind) -> type[SharingScheme]:
    return _lookup(kind)[0]
