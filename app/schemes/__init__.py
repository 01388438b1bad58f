"""Each scheme's part of the app, found by the scheme's kind in the registry of views (entry point
group `lsmn.app_views`; the built-in views are entry points of the Studio's own package, as a
plugin's are of its): what it adds to the Overview, the page sections it fills (Signatures, Sharing
graph), its routing editor and how it retrains. Pages ask this registry and never name a scheme; a
scheme without a view gets `SchemeView()`, nothing of its own, and every generic page still shows
its runs, with a line saying that no view is installed.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app.schemes.view import SchemeView
from lsmn_core.errors import LsmnError
from lsmn_core.installed import failures
from lsmn_core.plugins import Registry


def _check_view(name: str, obj) -> str | None:
    return None if isinstance(obj, SchemeView) else f"{obj!r:.80} is not an app.schemes.view.SchemeView"


VIEWS: Registry[SchemeView] = Registry("lsmn.app_views", "app view", _check_view)
NO_VIEW = SchemeView()


def register_view(kind: str, view: SchemeView) -> None:
    VIEWS.register(kind, view)


def has_view(kind: str) -> bool:
    """Whether a view for `kind` is installed and loads."""
    try:
        VIEWS.get(kind)
    except LsmnError:
        return False
    return True


def view_of(kind: str) -> SchemeView:
    """The view of a scheme's kind; `NO_VIEW` (the generic pages only) when none is installed or it
    fails to load (the sidebar lists the failure)."""
    try:
        return VIEWS.get(kind)
    except LsmnError:
        return NO_VIEW


@st.cache_resource(show_spinner=False)
def plugin_failures() -> list[str]:
    """One line per installed entry (engine registries and views) that failed to load, with its reason;
    found once per server (each entry is imported once)."""
    rows = [*failures(), *((VIEWS.group, row) for row in VIEWS.failures())]
    return [f"{group} {row.name} ({row.package} {row.version}): {row.problem}" for group, row in rows]


def kinds_with(has: Callable[[SchemeView], object]) -> str:
    """The kinds whose view has something, for messages: "a or b"."""
    return " or ".join(kind for kind in VIEWS.names() if has(view_of(kind)))
