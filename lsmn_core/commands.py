"""The registry of commands a package adds to `lsmn` (entry point group `lsmn.commands`): a scheme
whose runs are made or used otherwise than by training brings its own (the task vectors' `lsmn
vectors` and `lsmn merge`). An entry is a Command: its help line, how it adds its arguments to its
argparse parser, and what it runs; a problem it raises as an LsmnError is printed as one line with
exit status 2, as every command's is."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from lsmn_core.plugins import Registry


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def _check_command(name: str, obj) -> str | None:
    return None if isinstance(obj, Command) else f"{obj!r:.80} is not a Command (lsmn_core/commands.py)"


COMMANDS: Registry = Registry("lsmn.commands", "command", _check_command)
