"""One task's network of a pretrained run, written in its checkpoint's own format (a Hugging Face
folder for a Hugging Face checkpoint, which transformers loads without the Studio): the checkpoint
with the task's values of its target weights (its mask and deltas applied), its tokenizer, and
beside them the task's head (`lsmn-head.safetensors`, how it reads the tokens in `lsmn-head.json`).
A task's LoRA adapter is also written on its own, as the peft adapter folder `peft-adapter/` that
peft loads over the checkpoint without the Studio.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lsmn_core.errors import ConfigError, RunError
from lsmn_core.pretrained import loader_of
from lsmn_core.pretrained.lora import LoraAdapters
from lsmn_core.pretrained.network import PretrainedNet
from lsmn_core.store.files import new_folder, occupied
from lsmn_core.store.runs import Run


def export_task(run: Run, task: str, out: str | Path) -> Path:
    """Write task `task`'s network into the new folder `out` (never an existing one); returns it."""
    out = Path(out)
    if occupied(out):
        raise ConfigError(f"--out {out}: exists; give a new folder (an existing one is never overwritten)")
    if task not in run.task_names:
        raise ConfigError(f"--task: no task {task!r} in the run (tasks: {', '.join(run.task_names)[:300]})")
    model = run.load_model()
    if not isinstance(model, PretrainedNet):
        raise RunError(f"run {run.id} is not of a pretrained network; `lsmn export RUN --out FILE` writes its "
                       "compact file")
    index = run.task_names.index(task)
    checkpoint = model.network()
    network = copy.deepcopy(checkpoint.module)
    parameters = dict(network.named_parameters())
    with torch.no_grad():
        for name, value in model.body.task_weights(index, model.pretrained()).items():
            parameters[name].copy_(value)
    with new_folder(out) as partial:
        loader_of(run.config().model.pretrained).save(network, partial, checkpoint.tokenizer)
        head = model.heads[task]
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(partial / "lsmn-head.safetensors"))
        spec = model.specs[index]
        (partial / "lsmn-head.json").write_text(json.dumps({
            "run": run.id, "task": task, "kind": spec.kind, "outputs": spec.n_outputs, "metric": spec.metric,
            "pool": run.config().model.pool, "spec": spec.to_dict(), "reads": f"layer {model.body.read_depth(index)}"
            if model.body.read_depth(index) else "the network's output"}, indent=1))
        if isinstance(model.body, LoraAdapters):
            adapter_config, adapter = model.body.peft_adapter(index, model.source.source)
            (partial / "peft-adapter").mkdir()
            (partial / "peft-adapter" / "adapter_config.json").write_text(json.dumps(adapter_config, indent=1))
            save_file({k: v.cpu().contiguous() for k, v in adapter.items()},
                      str(partial / "peft-adapter" / "adapter_model.safetensors"))
    return out
