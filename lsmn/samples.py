"""The shipped example runs: one digits task set under every scheme (independent, hard, sparse,
mann, moe, mixture), the digits x input-domains task set under the mixture scheme, and two hyper
(MUiR) runs: Kang's 30 synthetic tasks and a cross-modal set (2-D conv, MLP, 1-D conv); and, built
only when named, the 1,000-task run of configs/scale-1000.yaml.

`lsmn samples` rebuilds them. Each run is trained into a temporary folder and then swapped in,
so an interrupted rebuild leaves the previous sample runs intact.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lsmn_core.config import load_config
from lsmn_core.errors import ConfigError
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
}
BUILT_ON_REQUEST = {"scale-1000"}  # too large to ship (its every pruning round's masks): `--only scale-1000`


def build_samples(out: Path, configs: Path, device: str = "cpu", quiet: bool = False,
                  only: list[str] | None = None) -> list[Path]:
    """Rebuild the sample runs (or only the named ones) into `out`, from the configs in `configs`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for folder, (config_file, overrides) in SAMPLES.items():
        if folder not in (only or set(SAMPLES) - BUILT_ON_REQUEST):
            continue
        config = load_config(Path(configs) / config_file, [f"name={folder}", *overrides])
        with tempfile.TemporaryDirectory(dir=out, prefix=".building-") as tmp:
            run = train(config, tmp, device=device, folder=folder, quiet=quiet)
            if run is None:
                raise ConfigError("sample runs are built in one process, not under torchrun")
            target = out / folder
            if target.exists():
                shutil.rmtree(target)
            run.rename(target)
        built.append(target)
    return built
