"""The hierarchical scheme in the app: the depth each task's head reads the shared body at, on the
Overview (its runs' other pages are the generic ones)."""

import streamlit as st

from app.figures import bar_chart
from app.layout import chart
from app.schemes.view import SchemeView


def overview(run) -> bool:
    depths = run.summary().get("routing", {}).get("depths")
    if not isinstance(depths, dict) or not all(isinstance(d, int) for d in depths.values()):
        return False
    chart(st, bar_chart(depths, "Depth each task is supervised at", "blocks of the shared body", "task",
                        "Each task's head reads the shared body after this many blocks; the blocks above never "
                        "see its samples, so its loss trains only the blocks below (hierarchical sharing)."),
          "depths")
    return True


VIEW = SchemeView(overview=overview)
