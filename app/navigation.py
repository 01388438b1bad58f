"""The app's pages, and which of them the selected run can fill: the sidebar links those only. A
page opened for a run it cannot fill (from a bookmark or a link) says why in one line and offers
runs that it can show, as buttons that switch to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from app.schemes import kinds_with, view_of
from app.state import (checked_routing_of, current_run, drawn_safely, listed_runs, open_when_listed, run_picker,
                       selected_run)
from app.text import plain
from lsmn_core.errors import LsmnError
from lsmn_core.store.runs import Run
from lsmn_core.training.adapt import domain_tasks

OFFERED = 4  # runs offered on a page that does not apply to the selected one


def has_masks(run: Run) -> bool:
    """Whether the run has per-task masks (a damaged routing counts: the page that reads it says what is wrong)."""
    try:
        return bool(checked_routing_of(run)[2])
    except LsmnError:
        return True


def scheme_section(run: Run, page: str) -> tuple[object, object] | None:
    """The run's scheme view's section of `page` and its report, or None when it has none (a report
    that cannot be read counts as one: the page says what is wrong)."""
    section = view_of(run.scheme).pages.get(page)
    if section is None:
        return None
    try:
        report = section.read(run)
    except LsmnError as exc:
        return section, exc
    return (section, report) if report else None


def _no_masks(run: Run) -> str | None:
    return None if has_masks(run) else f"{run.id} ({run.scheme}) has no per-task masks: its tasks do not " \
                                       "choose weights of their own."


def _no_signatures(run: Run) -> str | None:
    return None if scheme_section(run, "signatures") else (
        f"{run.id} ({run.scheme}) has no signatures: {kinds_with(lambda v: 'signatures' in v.pages)} runs have them.")


def _no_sharing(run: Run) -> str | None:
    if has_masks(run) or scheme_section(run, "sharing"):
        return None
    return (f"{run.id} ({run.scheme}) shares nothing the graph can draw: no per-task masks, hypermodules or experts"
            + (" (import its fine-tunes as task vectors: lsmn vectors RUN)." if run.on_checkpoint else "."))


def _no_network(run: Run) -> str | None:
    missing = run.missing_sources()
    return None if missing is None else f"Attributions need {run.id}'s network: {missing}"


def _nothing_to_edit(run: Run) -> str | None:
    if view_of(run.scheme).editor is not None or domain_tasks(run):
        return None
    return (f"{run.id} ({run.scheme}) has no per-task routing to edit and no image tasks to adapt to another "
            f"domain: {kinds_with(lambda v: v.editor)} runs have routings.")


def _always(run: Run) -> None:
    return None


@dataclass(frozen=True)
class StudioPage:
    """A page of the app: its script in app/views, its title, and why it cannot show a run (None: it can)."""

    name: str
    title: str
    why_not: Callable[[Run], str | None] = _always

    @property
    def script(self) -> str:
        return f"views/{self.name}.py"

    def cannot_show(self, run: Run) -> str | None:
        """Why not, or None; a run too damaged to tell is shown, so that the page says what is wrong."""
        try:
            return self.why_not(run)
        except LsmnError:
            return None


PAGES = {page.name: page for page in (
    StudioPage("overview", "Overview"),
    StudioPage("masks", "Masks and overlap", _no_masks),
    StudioPage("signatures", "Signatures", _no_signatures),
    StudioPage("sharing", "Sharing graph", _no_sharing),
    StudioPage("attributions", "Attributions", _no_network),
    StudioPage("edit", "Edit and retrain", _nothing_to_edit),
    StudioPage("compare", "Compare"),
)}


def navigation():
    """Every page registered (so that a bookmark opens it), the sidebar drawn: the links of the pages the
    selected run can fill, then the runs folder and run picker. Returns the page to run."""
    pages = {name: st.Page(page.script, title=page.title, default=name == "overview") for name, page in PAGES.items()}
    current = st.navigation(list(pages.values()), position="hidden")
    links = st.sidebar.container()
    st.sidebar.title("LSMN Studio")
    run_picker()
    run = selected_run()
    for name, page in PAGES.items():
        if run is None or page.cannot_show(run) is None:
            links.page_link(pages[name])
    return current


def run_for(name: str) -> Run:
    """The selected run, for the page `name`; or, when the page cannot show it, stop the page with why
    and buttons that switch to runs it can show (the folder's own first, then the samples)."""
    run = current_run()
    if run is None:
        st.stop()
    page = PAGES[name]
    reason = page.cannot_show(run)
    if reason is None:
        return run
    st.title(page.title)
    st.info(plain(reason))
    offered = []
    for other in listed_runs():
        if len(offered) == OFFERED:
            break
        if other.path != run.path and page.cannot_show(other) is None:
            offered.append(other)
    if offered:
        st.caption(f"Runs that {page.title} can show:")
    for column, other in zip(st.columns(OFFERED), offered):
        if column.button(f"{other.id} ({other.scheme})", key=f"offer_{name}_{other.id}"):
            open_when_listed(st.session_state["runs_folder"], other.path)
            st.rerun()
    st.stop()


def draw_scheme_section(run: Run, name: str) -> bool:
    """Draw the run's scheme view's section of the page `name`; whether it has one."""
    found = scheme_section(run, name)
    if found is None:
        return False
    section, report = found
    if isinstance(report, LsmnError):
        st.error(f"Cannot read the run's routing: {plain(report)}")
    else:
        drawn_safely(PAGES[name].title, section.draw, run, report)
    return True
