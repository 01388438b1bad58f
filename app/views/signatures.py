"""Signatures: the module order each task's signature picks at each layer, how sure it is, and how
similar tasks' signatures are (drawn by the run's scheme view)."""

from app.schemes import show_scheme_page

show_scheme_page("signatures", "Signatures", "signatures")
