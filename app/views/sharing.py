"""Sharing graph: how the run's tasks share modules (hypermodules and their alignment search, or
experts and their usage), as the run's scheme view draws it."""

from app.schemes import show_scheme_page

show_scheme_page("sharing", "Sharing graph", "hypermodules or experts")
