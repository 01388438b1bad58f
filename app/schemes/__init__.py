"""Each scheme's part of the app, found by the scheme's kind: what it adds to the Overview, the page
sections it fills (Signatures, Sharing graph), its routing editor and how it retrains. Pages ask
this registry and never name a scheme; a scheme without a view module gets `SchemeView()`, nothing
of its own, and every generic page still shows its runs.
"""

from __future__ import annotations

from collections.abc import Callable

from app.schemes import hierarchical, hyper, mann, mixture, moe, soft, sparse
from app.schemes.view import SchemeView
from app.state import drawn_safely, run_with_report

VIEWS: dict[str, SchemeView] = {"sparse": sparse.VIEW, "mann": mann.VIEW, "mixture": mixture.VIEW,
                                "moe": moe.VIEW, "hyper": hyper.VIEW, "hierarchical": hierarchical.VIEW,
                                "soft": soft.VIEW}


def register_view(kind: str, view: SchemeView) -> None:
    VIEWS[kind] = view


def view_of(kind: str) -> SchemeView:
    return VIEWS.get(kind, SchemeView())


def kinds_with(has: Callable[[SchemeView], object]) -> str:
    """The kinds whose view has something, for messages: "a or b"."""
    return " or ".join(kind for kind, view in VIEWS.items() if has(view))


def show_scheme_page(page: str, title: str, missing: str) -> None:
    """A page whose content the selected run's scheme view draws (its `pages[page]`), or a message
    saying that the scheme has no `missing` and which schemes do."""
    def read(run):
        section = view_of(run.scheme).pages.get(page)
        report = section.read(run) if section else None
        return (section, report) if report else None

    run, (section, report) = run_with_report(
        title, read, f"{missing}. Pick a {kinds_with(lambda v: page in v.pages)} run in the sidebar")
    drawn_safely(title, section.draw, run, report)
