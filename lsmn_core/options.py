"""Typed options: dataclass fields with checks, built from plain data (YAML, JSON) with one-line
errors that name the key. The run config and every scheme's options are built this way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal

from lsmn_core.errors import ConfigError


def check(predicate, message: str, default=dataclasses.MISSING, default_factory=dataclasses.MISSING):
    """A dataclass field whose value must satisfy `predicate` (message says what it must be)."""
    return field(default=default, default_factory=default_factory, metadata={"check": (predicate, message)})


def describe(value) -> str:
    """A value for an error message, cut short: a message is one line of a few hundred characters."""
    text = repr(value) if not isinstance(value, (dict, list)) else f"a {type(value).__name__} of {len(value)}"
    return f"{text[:80] + '...' if len(text) > 80 else text} ({type(value).__name__})"


def build(cls, value, where: str):
    """Build dataclass `cls` (or a typed value) from plain YAML data, raising ConfigError at `where`."""
    origin = typing.get_origin(cls)
    if cls is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        mapped = [o for o in inner if dataclasses.is_dataclass(o)]  # a mapping builds the dataclass member
        return build(mapped[0] if mapped and isinstance(value, dict) else inner[0], value, where)
    if origin is Literal:
        choices = typing.get_args(cls)
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {describe(value)}")
        (item,) = typing.get_args(cls)
        return [build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(cls):
        return _build_dataclass(cls, value, where)
    if cls is dict:  # free-form keyword arguments, passed on as they are
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to values, got {describe(value)}")
        return value
    if cls is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {describe(value)}")
        return value
    if cls is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {describe(value)}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"{where}: an integer of {len(str(abs(value)))} digits is out of range")
        return value
    if cls is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) >= 2**1023:
            raise ConfigError(f"{where}: expected a number within a float's range, got {describe(value)}")
        return float(value)
    if cls is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {describe(value)}")
        return value
    raise TypeError(f"unsupported config type {cls}")


def _key(f: dataclasses.Field) -> str:
    """A field's key in the data: its name, or metadata "key" where the name could not be (class)."""
    return f.metadata.get("key", f.name)


def as_data(value):
    """The plain data `build` reads back: dataclasses as mappings under their fields' keys."""
    if dataclasses.is_dataclass(value):
        return {_key(f): as_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [as_data(v) for v in value]
    return value


def _build_dataclass(cls, value, where: str):
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields), key=str)
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {known})")
    kwargs = {}
    for data_key, f in fields.items():
        name = f.name
        key = f"{where}.{data_key}" if where != "config" else data_key
        if data_key not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing required key")
            continue
        kwargs[name] = build(hints[name], value[data_key], key)
        if "check" in f.metadata and kwargs[name] is not None:
            predicate, message = f.metadata["check"]
            if not predicate(kwargs[name]):
                raise ConfigError(f"{key}: {message}; got {kwargs[name]!r}")
    return cls(**kwargs)
