"""What is installed: every registry of the engine, each entry loaded to see whether it works (what
`lsmn plugins` prints and the app's sidebar warns about). A group whose registry lives above the
engine (the app's views) is listed by a plain registry of its entry points."""

from __future__ import annotations

from lsmn_core.commands import COMMANDS
from lsmn_core.datasets import DATASETS
from lsmn_core.merges import MERGES
from lsmn_core.network.blocks import BLOCKS
from lsmn_core.plugins import GROUPS, Listing, Registry, registry
from lsmn_core.pretrained import LOADERS
from lsmn_core.schemes import SCHEMES

ENGINE: tuple[Registry, ...] = (SCHEMES, BLOCKS, DATASETS, LOADERS, MERGES, COMMANDS)


def listings(groups: tuple[str, ...] = GROUPS) -> dict[str, list[Listing]]:
    """Every claim of every group, by group (each entry imported once)."""
    return {group: registry(group).listing() for group in groups}


ENGINE_GROUPS = tuple(each.group for each in ENGINE)


def failures(groups: tuple[str, ...] = ENGINE_GROUPS) -> list[tuple[str, Listing]]:
    """(group, listing) of every entry that does not work, with its reason."""
    return [(group, row) for group, rows in listings(groups).items() for row in rows if row.problem]
