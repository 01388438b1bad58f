"""Checkpoints of the final training phase, so that a killed run continues to the same weights.

One safetensors file holds everything `TrainingSession.train` needs to go on exactly where it
stopped: the model (and its non-parameter routing), the optimiser's moments, the best state kept
for early stopping, the data generator and the loop counters, and the routing search's report.
Counters and the optimiser's settings travel as JSON in the file's metadata, so reading a checkpoint
never executes code, and one atomic rename means a checkpoint is either whole or absent.

The routing search's report does not change during the final phase, so it goes to its own file
(SEARCH_FILE) once, written before the first checkpoint, instead of into every checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lsmn_core.store import routing
from lsmn_core.errors import RunError
from lsmn_core.training.session import SearchReport
from lsmn_core.store.files import atomic_write, checked_safetensors

FILE = "checkpoint.safetensors"
SEARCH_FILE = "checkpoint-search.safetensors"


@dataclass
class Checkpointing:
    """Where the final phase saves checkpoints, what it saves with them, and one to continue from."""

    folder: Path
    report: SearchReport  # the routing search's result, needed to finish the run after a resume
    resume_from: dict | None = None  # a loaded checkpoint (see `load`)

    def resume(self, session, optimizer: torch.optim.Optimizer, stopping) -> int:
        """Continue from the loaded checkpoint, if there is one: model, optimiser, generator and the
        early-stopping state (a trainer.EarlyStopping); returns the step it was written after (0: none)."""
        if self.resume_from is None:
            return 0
        loop = restore(self.resume_from, session, optimizer)
        stopping.best_score, stopping.evals_since_best = loop["best_score"], loop["evals_since_best"]
        stopping.best_state = self.resume_from["best"]
        return loop["step"]

    def save(self, session, optimizer: torch.optim.Optimizer, step: int, stopping) -> None:
        """A checkpoint after `step` steps of the final phase."""
        save(self.folder, session, optimizer, {"step": step, "best_score": stopping.best_score,
                                               "evals_since_best": stopping.evals_since_best},
             stopping.best_state, self.report)


def _flat(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def save(folder: Path, session, optimizer: torch.optim.Optimizer, loop: dict, best_state: dict | None,
         report: SearchReport) -> None:
    """Write the checkpoint after `loop["step"]` steps of the final phase."""
    model = session.model
    tensors = {**_flat("model.", model.state_dict()), **_flat("best.", best_state or {}),
               "generator": session.generator.get_state()}
    optim = optimizer.state_dict()
    for index, state in optim["state"].items():
        tensors.update(_flat(f"optim.{index}.", state))
    doc, arrays = routing.encode(model)
    tensors.update({f"routing.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    loop = {**loop, "session_step": session.step, "streams": session.tasks.stream_positions()}
    meta = {"loop": loop, "routing": doc, "param_groups": optim["param_groups"],
            "has_best": best_state is not None}
    if not (folder / SEARCH_FILE).is_file():
        searched = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in report.arrays.items()}
        atomic_write(folder / SEARCH_FILE, lambda tmp: save_file(
            searched, tmp, metadata={"summary": json.dumps(report.summary)}))
    atomic_write(folder / FILE, lambda tmp: save_file(tensors, tmp, metadata={"state": json.dumps(meta)}))


def remove(folder: Path) -> None:
    """A finished run needs no checkpoint."""
    for name in (FILE, SEARCH_FILE):
        (folder / name).unlink(missing_ok=True)


def load(folder: Path) -> dict | None:
    """The checkpoint's parts as tensors and JSON, or None when the run has none."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(checked_safetensors(path)), framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        with safe_open(str(checked_safetensors(folder / SEARCH_FILE)), framework="np") as f:
            report = SearchReport(json.loads(f.metadata()["summary"]), {k: f.get_tensor(k) for k in f.keys()})
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise RunError(f"{path}: corrupt checkpoint ({exc})") from None

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    arrays = {k: v.numpy() for k, v in part("routing.").items()}
    return {"meta": meta, "model": part("model."), "best": part("best.") if meta["has_best"] else None,
            "generator": tensors["generator"], "optim": part("optim."),
            "routing": (meta["routing"], arrays), "report": report}


def restore(state: dict, session, optimizer: torch.optim.Optimizer) -> dict:
    """Put the model, optimiser and generator back; returns the loop counters to continue from."""
    model = session.model
    model.load_weights(state["model"])
    doc, arrays = state["routing"]
    routing.apply_buffers(model, routing.decode(doc, arrays, model))
    moments: dict[int, dict] = {}
    for key, value in state["optim"].items():
        index, name = key.split(".", 1)
        moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": state["meta"]["param_groups"]})
    session.generator.set_state(state["generator"])
    session.step = state["meta"]["loop"]["session_step"]
    session.tasks.seek(state["meta"]["loop"].get("streams", {}))
    return state["meta"]["loop"]
