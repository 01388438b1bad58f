"""The independent scheme in the app: on a checkpoint, where each task's fine-tune or LoRA adapter
changed it, layer by layer, and how alike two tasks' changes are (the whole network or one layer);
importing the run as task vectors (`lsmn vectors RUN`) shows their overlap and interference and
merges them."""

import streamlit as st

from app.figures import cosine_heatmap, norms_heatmap
from app.layout import chart, task_columns
from app.schemes.view import SchemeView
from app.text import plain


def overview(run) -> bool:
    changes = run.summary().get("routing", {}).get("changes")
    if not changes:
        return False
    tasks = run.task_names
    left, right = task_columns(len(tasks))
    chart(left, norms_heatmap(changes["norms"], tasks, changes["layers"]), "changes")
    over = {"the whole network": changes["cosine"], **dict(zip(changes["layers"], changes["cosine_per_layer"]))}
    where = right.selectbox("Pairs of tasks over", list(over), key=f"changes_{run.id}")
    chart(right, cosine_heatmap(over[where], tasks, where), "changes_cosine")
    st.caption(f"Their overlap, sign conflicts and merges: import the run as task vectors "
               f"(lsmn vectors {plain(run.path)}).")
    return True


VIEW = SchemeView(overview=overview)
