"""Plugins: one registry shape for every extensible concept (schemes, blocks, data sets, pretrained
loaders, merge methods, commands, app views).

A registry maps names to the objects of one concept. Its names come from the entry points of its
group (`lsmn.schemes`, `lsmn.blocks`, ...), read from the installed packages' metadata, as pytest
and Flake8 find theirs; the Studio's own built-ins are entry points of its own package, declared in
its pyproject.toml exactly as a third party declares its plugins. `register()` adds an object in
this process (the Python API, a notebook). An entry point is imported when its name is first used,
or when everything is listed (`lsmn plugins`, the app's sidebar); one that fails to import, or whose
object breaks the concept's contract, is recorded with a one-line reason and left out, so the rest
of the Studio keeps working. Two packages claiming one name make that name an error naming both,
raised when the name is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lsmn_core.errors import ConfigError, LsmnError, MissingModuleError

GROUPS = ("lsmn.schemes", "lsmn.blocks", "lsmn.datasets", "lsmn.pretrained", "lsmn.merges", "lsmn.commands",
          "lsmn.app_views")
IN_PROCESS = "this process"  # the package named for objects given to register()

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """One package's claim on a name: the entry point (None for register()) and where it comes from."""

    name: str
    package: str
    version: str
    target: str  # "module:attribute"
    entry_point: metadata.EntryPoint | None = None


@dataclass(frozen=True)
class Listing:
    """A name as `lsmn plugins` lists it: who provides it, and what is wrong with it (None: nothing)."""

    name: str
    package: str
    version: str
    target: str
    problem: str | None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of bounded length: its type and the first line of its message."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def load_named(path, where: str, error: type[LsmnError] = MissingModuleError) -> Any:
    """The object a config names by its import path, "package.module:attribute" (a user's block
    class, data set factory or model class): imported by name, never unpickled. A path that is not
    of that form (a relative or file-system path) or that does not import raises `error` at `where`."""
    module_name, _, attribute = str(path).partition(":")
    if not (DOTTED.fullmatch(module_name) and DOTTED.fullmatch(attribute)):
        raise error(f"{where}: {str(path)[:80]!r} is not an import path of the form 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # importing a user's module may raise anything
        raise error(f"{where}: cannot import {str(path)[:80]!r} ({one_line(exc)}); put its module on "
                    "PYTHONPATH") from None
    return obj


def _claims(group: str) -> dict[str, list[Claim]]:
    """Every installed package's entry points of `group`, by name; a package whose metadata is found
    twice (an editable install beside its build folder) claims a name once."""
    claims: dict[str, list[Claim]] = {}
    for point in metadata.entry_points(group=group):
        dist = getattr(point, "dist", None)
        package = dist.metadata["Name"] if dist is not None else "unknown package"
        claim = Claim(point.name, package, dist.version if dist is not None else "?", point.value, point)
        same = claims.setdefault(point.name, [])
        if all(c.package != package for c in same):
            same.append(claim)
    return claims


class Registry(Generic[T]):
    """The named objects of one concept. `check(name, obj)` says what is wrong with an object that
    does not meet the concept's contract (None: nothing); `error` is the error a bad name raises."""

    def __init__(self, group: str, concept: str, check: Callable[[str, Any], str | None] | None = None,
                 error: type[LsmnError] = ConfigError):
        self.group, self.concept, self.check, self.error = group, concept, check, error
        self._found: dict[str, list[Claim]] | None = None
        self._registered: dict[str, tuple[Claim, T]] = {}
        self._loaded: dict[str, T] = {}
        self._failed: dict[str, str] = {}
        REGISTRIES[group] = self

    def refresh(self) -> None:
        """Read the installed packages' entry points again (a package installed or put on the path
        since); objects already loaded stay loaded."""
        self._found = None
        self._failed.clear()

    def _discovered(self) -> dict[str, list[Claim]]:
        if self._found is None:
            self._found = _claims(self.group)
        return self._found

    def claims(self, name: str) -> list[Claim]:
        """Every claim on `name`: installed packages' and this process's."""
        found = list(self._discovered().get(name, []))
        if name in self._registered:
            found.append(self._registered[name][0])
        return found

    def names(self) -> list[str]:
        """Every name known, sorted, whether or not its object loads (nothing is imported)."""
        return sorted(set(self._discovered()) | set(self._registered))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.claims(name))

    def register(self, name: str, obj: T) -> None:
        """Make `obj` known as `name` in this process; a name that a package or an earlier call
        already claims is refused."""
        taken = self.claims(name)
        if taken:
            raise self.error(f"the {self.concept} {name!r} is already provided by {_owner(taken[0])}")
        problem = self.check(name, obj) if self.check else None
        if problem:
            raise self.error(f"cannot register the {self.concept} {name!r}: {problem}")
        target = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"
        self._registered[name] = (Claim(name, IN_PROCESS, "", target), obj)

    def unregister(self, name: str) -> None:
        """Forget an object given to register() (a test or notebook cleaning up after itself)."""
        self._registered.pop(name, None)
        self._loaded.pop(name, None)

    def get(self, name: str, where: str | None = None) -> T:
        """The object named `name`, imported on first use; raises the registry's error (at `where`
        in the message) for a name nobody provides, one two packages claim, or one that fails to load."""
        where = f"{where}: " if where else ""
        claims = self.claims(name) if isinstance(name, str) else []
        if not claims:
            known = ", ".join(self.names()) or "none installed"
            raise self.error(f"{where}unknown {self.concept} {str(name)[:60]!r} (known: {known})")
        if len(claims) > 1:
            raise self.error(f"{where}the {self.concept} {name!r} is claimed by two packages, "
                             f"{_owner(claims[0])} and {_owner(claims[1])}; uninstall one of them")
        if name in self._registered:
            return self._registered[name][1]
        obj = self._load(claims[0])
        if obj is None:
            raise self._load_error(f"{where}the {self.concept} {name!r} of {_owner(claims[0])} failed to load: "
                                   f"{self._failed[name]}")
        return obj

    def _load_error(self, message: str) -> LsmnError:
        """A plugin that cannot be imported is a missing module where the registry's error is a config
        error (a stored run still shows what it holds without it)."""
        return MissingModuleError(message) if issubclass(self.error, ConfigError) else self.error(message)

    def _load(self, claim: Claim) -> T | None:
        """Import a claim's object once; None (with the reason recorded) when it fails or breaks the contract."""
        if claim.name in self._loaded:
            return self._loaded[claim.name]
        if claim.name in self._failed or claim.entry_point is None:
            return None
        try:
            obj = claim.entry_point.load()
        except Exception as exc:  # a plugin's import may raise anything; the Studio goes on without it
            self._failed[claim.name] = one_line(exc)
            return None
        problem = self.check(claim.name, obj) if self.check else None
        if problem:
            self._failed[claim.name] = problem
            return None
        self._loaded[claim.name] = obj
        return obj

    def listing(self) -> list[Listing]:
        """Every claim on every name, each loaded to see whether it works (what `lsmn plugins` prints)."""
        rows = []
        for name in self.names():
            claims = self.claims(name)
            for claim in claims:
                problem = None
                if len(claims) > 1:
                    others = ", ".join(_owner(c) for c in claims if c is not claim)
                    problem = f"also claimed by {others}; using the name is an error"
                elif claim.package != IN_PROCESS and self._load(claim) is None:
                    problem = self._failed[name]
                rows.append(Listing(name, claim.package, claim.version, claim.target, problem))
        return rows

    def failures(self) -> list[Listing]:
        """The listed claims that do not work, with their reasons."""
        return [row for row in self.listing() if row.problem]


def _owner(claim: Claim) -> str:
    return claim.package if claim.package == IN_PROCESS else f"{claim.package} {claim.version} ({claim.target})"


REGISTRIES: dict[str, Registry] = {}  # group -> its registry, as each concept's module creates it


def registry(group: str) -> Registry:
    """The registry of `group`: the one its concept's module made, or a plain one that only lists and
    loads (the app's views, seen from outside the app)."""
    if group not in GROUPS:
        raise ConfigError(f"unknown plugin group {group!r} (known: {', '.join(GROUPS)})")
    return REGISTRIES[group] if group in REGISTRIES else Registry(group, group.split(".", 1)[1].rstrip("s"))


def refresh() -> None:
    """Every registry reads the installed packages' entry points again."""
    for each in REGISTRIES.values():
        each.refresh()
