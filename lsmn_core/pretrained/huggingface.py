"""`hf`: a Hugging Face model folder, `model.pretrained: {hf: FOLDER}`, opened with transformers
from local files only (nothing is downloaded) and never with remote code: `AutoModel` from its
config.json, weights from model.safetensors (or shards), or from a `.bin` state dict read with
`weights_only=True` (no code is unpickled); its tokenizer with it when the folder has one.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.options import build
from lsmn_core.plugins import one_line
from lsmn_core.pretrained.checkpoint import (Checkpoint, MissingSourceError, check_fits_memory, refuse_pickled_code,
                                              sha256)
from lsmn_core.pretrained.models import is_name, models_folder, named
from lsmn_core.store.files import read_json

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model")
WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")


@dataclass
class HuggingFaceOptions:
    hf: str  # the model folder, or the name of one in the models folder (lsmn_core.pretrained.models)


def _transformers():
    """transformers, quiet (no progress bars or load reports on the terminal), imported only by runs
    of a Hugging Face checkpoint (it takes a second)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


class HuggingFace:
    """A Hugging Face model folder (see the module's docstring)."""

    path_keys = ("hf",)  # resolved against the config file's folder

    def __init__(self, options: dict):
        self.options = build(HuggingFaceOptions, options, "model.pretrained")
        self.folder = named(self.options.hf)

    def source(self) -> str:
        return str(self.folder)

    def _config(self) -> dict:
        """config.json, checked: a model folder whose model transformers builds itself (no remote code)."""
        if not (self.folder / "config.json").is_file():
            if is_name(self.options.hf) and not self.folder.exists():
                raise MissingSourceError(f"model.pretrained.hf: {self.options.hf} is not installed in "
                                         f"{models_folder()}: run `lsmn models install {self.options.hf}` (or "
                                         "make models)")
            raise ConfigError(f"model.pretrained.hf: {self.folder} is not a Hugging Face model folder (no config.json)")
        config = read_json(self.folder / "config.json")
        if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
            raise ConfigError(f"model.pretrained.hf: {self.folder}/config.json names no model_type")
        if "auto_map" in config:
            raise ConfigError(f"model.pretrained.hf: {self.folder} needs remote code (its config.json has an "
                              "auto_map); the Studio never runs code from a model folder")
        return config

    def weight_files(self) -> list[Path]:
        self._config()
        for pattern in ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin"):
            found = sorted(self.folder.glob(pattern))
            if found:
                refuse_pickled_code(found, "model.pretrained.hf")
                return found
        raise ConfigError(f"model.pretrained.hf: {self.folder} holds no weights (model.safetensors or "
                          "pytorch_model.bin)")

    def open(self, weights: bool) -> Checkpoint:
        config = self._config()
        transformers = _transformers()
        try:
            model_config = transformers.AutoConfig.from_pretrained(self.folder, local_files_only=True)
        except (ValueError, KeyError, OSError) as exc:
            raise ConfigError(f"model.pretrained.hf: {self.folder}: {one_line(exc)}") from None
        width = next((config[k] for k in WIDTH_KEYS if isinstance(config.get(k), int)), None)
        if width is None:
            raise ConfigError(f"model.pretrained.hf: {self.folder}/config.json gives no hidden size "
                              f"({', '.join(WIDTH_KEYS)})")
        tokenizer = self._tokenizer(transformers)
        if not weights:
            with torch.device("meta"):
                module = transformers.AutoModel.from_config(model_config)
            return Checkpoint(module.eval(), hf_inputs, last_hidden_state, width, tokenizer)
        files = self.weight_files()
        check_fits_memory(files, "load")
        try:
            module, info = transformers.AutoModel.from_pretrained(
                self.folder, local_files_only=True, trust_remote_code=False, output_loading_info=True,
                use_safetensors=files[0].suffix == ".safetensors")
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
            raise ConfigError(f"model.pretrained.hf: cannot load {self.folder}: {one_line(exc)}") from None
        missing, unexpected = info.get("missing_keys") or [], info.get("unexpected_keys") or []
        if missing:
            extra = f", unexpected {sorted(unexpected)[0]!r}" if unexpected else ""
            raise ConfigError(f"model.pretrained.hf: the weights in {self.folder} do not fit its config: missing "
                              f"{sorted(missing)[0]!r}{extra}")
        for p in module.parameters():
            p.requires_grad_(False)
        return Checkpoint(module.eval(), hf_inputs, last_hidden_state, width, tokenizer,
                          {str(f): sha256(f) for f in files})

    def _tokenizer(self, transformers):
        return tokenizer_in(self.folder, "model.pretrained.hf") if has_tokenizer(self.folder) else None

    def save(self, module: nn.Module, folder: Path, tokenizer) -> None:
        cast(Any, module).save_pretrained(folder, safe_serialization=True)  # a transformers model
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        (folder / "lsmn-source.json").write_text(json.dumps({"source": self.source()}))


def hf_inputs(ids: torch.Tensor, attention: torch.Tensor | None) -> tuple[tuple, dict]:
    """A transformers model's forward arguments for token ids and their attention mask."""
    return (), {"input_ids": ids, "attention_mask": attention}


def last_hidden_state(output) -> torch.Tensor:
    """What a transformers model gives the heads: its last hidden state [B, L, width]."""
    return output.last_hidden_state


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def tokenizer_in(folder: Path, where: str):
    """The Hugging Face tokenizer saved in `folder`, from local files only, without remote code."""
    if not has_tokenizer(folder):
        raise ConfigError(f"{where}: {folder} holds no tokenizer ({', '.join(TOKENIZER_FILES)})")
    try:
        return _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: cannot read the tokenizer in {folder}: {one_line(exc)}") from None
