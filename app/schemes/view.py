"""What a scheme's view module gives the app (see app/schemes/__init__.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lsmn_core.store.runs import Run


@dataclass(frozen=True)
class PageSection:
    """A page's content for one scheme: `read(run)` gives its report (falsy: nothing to show; may
    raise LsmnError), `draw(run, report)` shows it."""

    read: Callable[[Run], object]
    draw: Callable[[Run, object], None]


@dataclass(frozen=True)
class SchemeView:
    """overview(run) draws the scheme's figures on the Overview and says whether it drew any;
    pages maps a page ("signatures", "sharing") to its section; pair_measures(run) gives measures of
    each pair of tasks the sharing graph may draw besides their masks' overlap, {measure: {"the whole
    network" or a layer: [T, T]}}; editor(run, doc, arrays) draws the routing editor and returns the
    edited (document, arrays); retrain_modes are the Edit page's choices of what retraining trains,
    with routing_help saying what "routing" trains."""

    overview: Callable[[Run], bool] | None = None
    pages: dict[str, PageSection] = field(default_factory=dict)
    pair_measures: Callable[[Run], dict[str, dict[str, list[list[float]]]]] | None = None
    editor: Callable[[Run, dict, dict], tuple[dict, dict]] | None = None
    retrain_modes: tuple[str, ...] = ("all",)
    routing_help: str = ""
