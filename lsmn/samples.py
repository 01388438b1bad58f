"""The shipped example runs: one digits task set under every scheme (independent, hard, sparse,
mann, moe, mixture), the digits x input-domains task set under the mixture scheme, and two hyper
(MUiR) runs: Kang's 30 synthetic tasks and a cross-modal set (2-D conv, MLP, 1-D conv); pretrained
checkpoints: WordNet's tasks with masks learned over MiniLM, a fine-tune per task of the Studio's
Fashion-MNIST conv network, and both task sets' fine-tunes as task vectors; and, built only when
named, the 1,000-task run of configs/scale-1000.yaml.

`lsmn samples` rebuilds them. Each run is trained into a temporary folder and then swapped in,
so an interrupted rebuild leaves the previous sample runs intact.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lsmn_core.config import load_config
from lsmn_core.errors import ConfigError
from lsmn_core.schemes.vectors.importing import from_run
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

SAMPLES = {  # folder: (config, overrides)
    "digits-independent": ("digits.yaml", ["scheme={kind: independent}"]),
    "digits-hard": ("digits.yaml", ["scheme={kind: hard}"]),
    "digits-sparse": ("digits.yaml", []),
    "digits-mann": ("digits.yaml", ["scheme={kind: mann, keep: 0.15, rounds: 3, round_steps: 200}"]),
    "digits-moe": ("digits.yaml", ["scheme={kind: moe, experts: 4, top_k: 2}"]),
    "digits-mixture": ("mixture.yaml", []),
    "domains-mixture": ("domains.yaml", []),
    "kang-hyper": ("kang.yaml", []),
    "crossmodal-hyper": ("crossmodal.yaml", ["scheme.generations=6", "train.steps=800"]),
    "scale-sparse": ("scale.yaml", []),
    "scale-1000": ("scale-1000.yaml", []),
    # pretrained checkpoints: MiniLM's masks learned per task (Piggyback; make models first); of the Studio's own
    # image checkpoint, a fine-tune per task, PackNet's packed tasks (no joint training after them, as its paper)
    # and Polytropon's LoRA skills
    "wordnet-minilm": ("wordnet-minilm.yaml", ["scheme={kind: sparse, masks: learned, mask_steps: 300}"]),
    "fashion-independent": ("digits-fashion-conv.yaml", ["scheme={kind: independent}"]),
    "fashion-packnet": ("digits-fashion-conv.yaml", ["scheme={kind: mann, keep: 0.2, round_steps: 150}",
                                                     "train.steps=0"]),
    "fashion-polytropon": ("digits-fashion-conv.yaml", ["scheme={kind: mixture, templates: 4, "
                                                        "adapter: {lora: {rank: 4, alpha: 8}}}"]),
}
# task vectors runs: the sample of fine-tunes each imports (shipped beside it, so it evaluates and merges on a
# fresh clone), or a config of fine-tunes built aside and not shipped (its masks and statistics only)
VECTORS: dict[str, str | tuple[str, list[str]]] = {
    "fashion-vectors": "fashion-independent",
    "wordnet-vectors": ("wordnet-minilm.yaml", ["scheme={kind: independent}"]),
}
BUILT_ON_REQUEST = {"scale-1000"}  # too large to ship (its every pruning round's masks): `--only scale-1000`


def build_samples(out: Path, configs: Path, device: str = "cpu", quiet: bool = False,
                  only: list[str] | None = None) -> list[Path]:
    """Rebuild the sample runs (or only the named ones) into `out`, from the configs in `configs`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = only or set(SAMPLES) - BUILT_ON_REQUEST | set(VECTORS)
    if unknown := sorted(set(chosen) - set(SAMPLES) - set(VECTORS)):
        raise ConfigError(f"--only: no sample {unknown[0]!r} (samples: {', '.join([*SAMPLES, *VECTORS])})")
    built = []
    for folder, (config_file, overrides) in SAMPLES.items():
        if folder in chosen:
            with tempfile.TemporaryDirectory(dir=out, prefix=".building-") as tmp:
                built.append(swap_in(_trained(configs, config_file, [f"name={folder}", *overrides], tmp, device,
                                              quiet, folder), out / folder))
    for folder, parent in VECTORS.items():
        if folder not in chosen:
            continue
        with tempfile.TemporaryDirectory(dir=out, prefix=".building-") as tmp:
            fine_tunes = out / parent if isinstance(parent, str) else \
                _trained(configs, parent[0], [f"name={folder}-finetunes", *parent[1]], tmp, device, quiet, None)
            # built beside the runs it records by a relative path, then swapped in under its own name
            made = from_run(open_run(fine_tunes), out, quiet=quiet, folder=f".{folder}-building", name=folder)
            built.append(swap_in(made, out / folder))
    return built


def _trained(configs: Path, config_file: str, overrides: list[str], tmp: str, device: str, quiet: bool,
             folder: str | None) -> Path:
    run = train(load_config(Path(configs) / config_file, overrides), tmp, device=device, folder=folder, quiet=quiet)
    if run is None:
        raise ConfigError("sample runs are built in one process, not under torchrun")
    return run


def swap_in(run: Path, target: Path) -> Path:
    """A finished sample run in place of the previous one (which stays until this one is whole)."""
    if target.exists():
        shutil.rmtree(target)
    run.rename(target)
    return target
