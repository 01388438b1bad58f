"""The routing editor of schemes whose tasks see a body through masks: per task and block, keep
the mask, reset it, clear it or copy another task's."""

import pandas as pd
import streamlit as st

from lsmn_core import routing


def mask_editor(run, doc, arrays):
    tasks = run.task_names
    depth = run.config().model.depth
    st.caption("Per task and body block: keep the mask, reset it (every weight), clear it (no weight), or "
               "copy another task's mask.")
    options = list(routing.MASK_ACTIONS) + [f"copy:{t}" for t in tasks]
    table = pd.DataFrame({f"block {b}": ["keep"] * len(tasks) for b in range(depth)}, index=tasks)
    edited = st.data_editor(table, key=f"mask_actions_{run.id}", column_config={
        c: st.column_config.SelectboxColumn(c, options=options, required=True) for c in table.columns})
    actions = {(t, b): edited.loc[t, f"block {b}"] for t in tasks for b in range(depth)}
    return doc, routing.edit_masks(doc, arrays, actions)
