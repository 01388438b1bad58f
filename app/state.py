"""Which runs folder and run the user is looking at (sidebar), and cached reads of run files."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st
from app.text import plain

from analysis.overlap import overlap_report
from lsmn_core.errors import LsmnError
from lsmn_core.store.runs import Run, list_runs, open_run

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_runs"  # shipped with the app: listed beside the user's runs, never written to


def user_runs() -> Path:
    """The user's runs folder: LSMN_RUNS, else ~/.lsmn/runs (read when asked: a test may set it)."""
    return Path(os.environ.get("LSMN_RUNS") or HOME_RUNS)


HOME_RUNS = Path.home() / ".lsmn" / "runs"


DEFAULT_RUNS = str(user_runs())


def same_folder(a, b) -> bool:
    """Whether two paths name one folder (after resolving links and relative parts)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def writable_runs(run: Run) -> Path:
    """Where a run's edits and retrained children go: beside it, unless it is a shipped sample
    run, whose folder belongs to the app: then the user's runs folder (LSMN_RUNS, else ~/.lsmn/runs)."""
    if same_folder(run.path.parent, SAMPLES):
        mine = user_runs().expanduser().resolve()
        return HOME_RUNS.resolve() if same_folder(mine, SAMPLES) else mine  # LSMN_RUNS=sample_runs: not there either
    return run.path.parent.resolve()


def open_when_listed(folder: Path, run_path: Path) -> None:
    """Ask the sidebar to show `folder` and select the run at `run_path` on the next script run (a
    widget's value can only be set before the widget is drawn)."""
    st.session_state["open_next"] = (str(folder), str(run_path))


def _stamp(run_path: str) -> float:
    """Changes whenever the run's files change, so cached reads refresh for runs in progress."""
    try:
        return max((p.stat().st_mtime for p in Path(run_path).iterdir()), default=0.0)
    except OSError:  # gone, or not readable: opening it says which
        return 0.0


def run_stamp(run: Run) -> float:
    """A cache key part that changes whenever the run's files change."""
    return _stamp(str(run.path))


@st.cache_resource(show_spinner=False, max_entries=8)
def opened_at(run_path: str, stamp: float) -> Run:
    """One opened Run per run state for every page and session, so that what it works out once (its
    config, its model's shapes) is worked out once in the server."""
    return open_run(run_path)


@st.cache_resource(show_spinner=False, max_entries=8)
def checked_routing_at(run_path: str, stamp: float) -> tuple[dict, dict, dict]:
    """Shared, not copied per call (cache_data would copy 14 MB of masks on every read of a
    100-task run); its arrays are made read-only so that no page can change them for the others."""
    doc, arrays, masks = opened_at(run_path, stamp).checked_routing()
    for array in (*arrays.values(), *masks.values()):
        array.flags.writeable = False
    return doc, arrays, masks


def checked_routing_of(run: Run) -> tuple[dict, dict, dict]:
    """The run's checked routing document, arrays and masks (Run.checked_routing), read once per
    run state for all pages."""
    return checked_routing_at(str(run.path), run_stamp(run))


@st.cache_data(show_spinner=False)
def _overlap(run_path: str, stamp: float) -> dict | None:
    masks = checked_routing_at(run_path, stamp)[2]
    run = opened_at(run_path, stamp)
    return overlap_report(masks, run.task_names, layers=run.mask_layers(), groups=run.mask_groups()) if masks else None


def overlap_of(run: Run) -> dict | None:
    """The run's overlap report (None for schemes without masks), cached per run state."""
    return _overlap(str(run.path), run_stamp(run))


def _listed(folder: str) -> tuple[dict[str, Run], list[Run], list[tuple[Path, str]]]:
    """The picker's runs by label, the chosen folder's own runs and its unreadable ones: its runs,
    then the shipped sample runs beside them (marked "sample"; a run of the folder with a sample's
    id hides that sample)."""
    runs, broken = list_runs(folder)
    own = {r.id for r in runs}
    samples = [] if same_folder(folder, SAMPLES) else [r for r in list_runs(SAMPLES)[0] if r.id not in own]
    return {**{r.label: r for r in runs}, **{f"{r.label} · sample": r for r in samples}}, runs, broken


def run_picker() -> None:
    """Sidebar: the runs folder and the selected run (kept in st.session_state['run_path'])."""
    if "open_next" in st.session_state:  # a run just made elsewhere (a retrain): show its folder, select it
        folder, run_path = st.session_state.pop("open_next")
        st.session_state["runs_folder"] = folder
        st.session_state["run_select"] = next((label for label, r in _listed(folder)[0].items()
                                               if same_folder(r.path, run_path)), None)
    # Drawn on every page (app/main.py), so the folder and run the user picked stay as they move between
    # pages; writing the values back keeps them should a script run stop before the picker is drawn.
    st.session_state["runs_folder"] = st.session_state.get("runs_folder", DEFAULT_RUNS)
    folder = st.sidebar.text_input("Runs folder", key="runs_folder",
                                   help="Your runs, and where retrained runs go. The sample runs shipped with "
                                        "the app are listed beside them, read-only.")
    if not Path(folder).is_dir() and not same_folder(folder, DEFAULT_RUNS):
        st.sidebar.error(f"No such folder: {plain(folder)}")
    by_label, own, broken = _listed(folder)
    for path, reason in broken:
        st.sidebar.warning(f"Skipped {plain(path.name)}: {plain(reason)}")
    if not own and not same_folder(folder, SAMPLES):
        st.sidebar.caption(f"No runs in {plain(folder)} yet: the sample runs are listed below.")
    if not by_label:
        st.session_state["run_path"] = None
        return
    if st.session_state.get("run_select") in by_label:
        st.session_state["run_select"] = st.session_state["run_select"]
    else:  # the first visit: a small run that reads at a glance, not the largest one
        landing = landing_run(own or list(by_label.values()))
        st.session_state["run_select"] = next(label for label, r in by_label.items() if r is landing)
    run = by_label[st.sidebar.selectbox("Run", list(by_label), key="run_select")]
    st.session_state["run_path"] = str(run.path)
    names = run.task_names
    # the picker cuts a long label short: the run's scheme, status and date are said in full below it
    created = str(run.meta.get("created", ""))[:16].replace("T", " ")
    st.sidebar.caption(f"{plain(run.scheme)} · {plain(run.status)} · {plain(created)}  \n"
                       f"{len(names)} tasks: {plain(', '.join(names[:12]))}" + (", ..." if len(names) > 12 else ""))


LANDING_TASKS = 10  # the app opens on the newest finished run with at most this many tasks


def landing_run(runs: list[Run]) -> Run:
    """The run the app opens on: the newest finished one with few tasks of the Studio's own networks
    (its every page works on a fresh machine, with no checkpoint installed), else of any network,
    else the newest."""
    small = [r for r in runs if len(r.task_names) <= LANDING_TASKS and (r.path / "summary.json").is_file()]
    own = [r for r in small if not r.on_checkpoint]
    return (own or small or runs)[0]


def listed_runs() -> list[Run]:
    """Every run the sidebar lists (the folder's, then the samples beside), without drawing it."""
    return list(_listed(st.session_state.get("runs_folder", DEFAULT_RUNS))[0].values())


def selected_run() -> Run | None:
    """The run the sidebar's picker (drawn by app/main.py before the page) selected, or None when none
    is, or it cannot be opened (opening it again, on the page, says why)."""
    path = st.session_state.get("run_path")
    try:
        return opened_at(path, _stamp(path)) if path else None
    except LsmnError:
        return None


def current_run() -> Run | None:
    """The selected run, or None with a message on the page saying why not."""
    path = st.session_state.get("run_path")
    if not path:
        st.info("No runs here yet. Pick another runs folder in the sidebar, or train one: "
                "`lsmn train configs/quickstart.yaml`.")
        return None
    try:
        return opened_at(path, _stamp(path))
    except LsmnError as exc:
        st.error(plain(exc))
        return None


def drawn_safely(what: str, draw, *args):
    """draw(*args), for figures of a scheme's own part of a run; data no run this project writes
    holds (a damaged or hand-made file) is an error on the page, not a crash of it."""
    try:
        return draw(*args)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        st.error(f"Cannot draw {what}: the run's data is malformed ({type(exc).__name__}: {plain(str(exc)[:200])})")
        return True
