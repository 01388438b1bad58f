"""The routing editor of schemes whose tasks see a body through masks: per task and block (and the
shared encoder, where the scheme prunes it), keep the mask, reset it, clear it or copy another task's."""

import pandas as pd
import streamlit as st

from lsmn_core.store import routing
from lsmn_core.network.layers import layer_label


def mask_editor(run, doc, arrays):
    tasks = run.task_names
    of = run.mask_layers()
    layers = sorted(set(of.values()))
    st.caption("Per task and body block (and the shared encoder, where it is pruned too): keep the mask, reset it "
               "(every weight), clear it (no weight), or copy another task's mask.")
    options = list(routing.MASK_ACTIONS) + [f"copy:{t}" for t in tasks]
    table = pd.DataFrame({layer_label(b): ["keep"] * len(tasks) for b in layers}, index=tasks)
    edited = st.data_editor(table, key=f"mask_actions_{run.id}", column_config={
        c: st.column_config.SelectboxColumn(c, options=options, required=True) for c in table.columns})
    actions = {(t, b): edited.loc[t, layer_label(b)] for t in tasks for b in layers}
    return doc, routing.edit_masks(doc, arrays, actions, of)
