"""`class`: a user's nn.Module with a weights file, `model.pretrained: {class: "package.module:Class",
args: {...}, weights: FILE}`. The class is imported by its name (as user blocks are), built with
`args`, and its weights read from `.safetensors`, or from a state dict read with `weights_only=True`
(no code is unpickled); a class that ships its weights names them (its `WEIGHTS` attribute), and
then `weights` may be left out. Its forward maps a batch of inputs to features [B, width] or [B, L, width];
its `width` (or `hidden_size`) attribute says how wide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.options import build
from lsmn_core.plugins import load_named, one_line
from lsmn_core.pretrained.checkpoint import Checkpoint, check_fits_memory, refuse_pickled_code, sha256

WIDTH_ATTRIBUTES = ("width", "hidden_size", "embed_dim")


@dataclass
class ModuleOptions:
    cls: str = field(metadata={"key": "class"})  # "package.module:Class"
    # .safetensors, or a state dict (.pt, .pth, .bin) read with weights_only=True; none: the class's own (WEIGHTS)
    weights: str | None = None
    args: dict = field(default_factory=dict)


class UserModule:
    """A user's module and its weights file (see the module's docstring)."""

    path_keys = ("weights",)  # resolved against the config file's folder

    def __init__(self, options: dict):
        self.options = build(ModuleOptions, options, "model.pretrained")

    @property
    def weights(self) -> Path:
        """The weights file: the config's, or the one a class that ships its weights names (WEIGHTS)."""
        if self.options.weights is not None:
            return Path(self.options.weights).expanduser()
        own = getattr(self._class(), "WEIGHTS", None)
        if not isinstance(own, (str, Path)):
            raise ConfigError(f"model.pretrained.weights: give the weights file ({self.options.cls} names none of "
                              "its own)")
        return Path(own)

    def source(self) -> str:
        return str(self.weights)

    def weight_files(self) -> list[Path]:
        if not self.weights.is_file():
            raise ConfigError(f"model.pretrained.weights: no such file: {self.weights}")
        refuse_pickled_code([self.weights], "model.pretrained.weights")
        return [self.weights]

    def _class(self) -> type[nn.Module]:
        cls = load_named(self.options.cls, "model.pretrained.class")
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"model.pretrained.class: {self.options.cls!r} is not an nn.Module class")
        return cls

    def _build(self) -> nn.Module:
        cls = self._class()
        try:
            return cls(**self.options.args)
        except TypeError as exc:
            raise ConfigError(f"model.pretrained: {self.options.cls}(**args) failed: {exc}") from None

    def open(self, weights: bool) -> Checkpoint:
        if not weights:
            with torch.device("meta"):
                module = self._build()
            return Checkpoint(module.eval(), module_inputs, as_features, self._width(module))
        files = self.weight_files()
        check_fits_memory(files, "load")
        module = self._build()
        state = self._state(self.weights)
        expected = module.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            parts = [f"missing {missing[0]!r}"] * bool(missing) + [f"unexpected {unexpected[0]!r}"] * bool(unexpected)
            raise ConfigError(f"model.pretrained.weights: {self.weights.name} does not fit {self.options.cls}: "
                              + ", ".join(parts))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"model.pretrained.weights: {self.weights.name} does not fit {self.options.cls}: "
                              f"{one_line(exc)}") from None
        for p in module.parameters():
            p.requires_grad_(False)
        return Checkpoint(module.eval(), module_inputs, as_features, self._width(module), None,
                          {str(self.weights): sha256(self.weights)})

    def _state(self, path: Path) -> dict[str, torch.Tensor]:
        if path.suffix == ".safetensors":
            try:
                return load_file(str(path))
            except (SafetensorError, OSError) as exc:
                raise ConfigError(f"model.pretrained.weights: {path.name} is not a readable safetensors file "
                                  f"({one_line(exc)})") from None
        return torch.load(path, map_location="cpu", weights_only=True)  # checked by weight_files

    def _width(self, module: nn.Module) -> int:
        width = next((getattr(module, a) for a in WIDTH_ATTRIBUTES if isinstance(getattr(module, a, None), int)), None)
        if width is None:
            raise ConfigError(f"model.pretrained.class: {self.options.cls} has no integer attribute "
                              f"{' or '.join(WIDTH_ATTRIBUTES)} saying how wide its features are")
        return width

    def save(self, module: nn.Module, folder: Path, tokenizer) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  str(folder / "model.safetensors"))
        (folder / "lsmn-module.json").write_text(json.dumps({"class": self.options.cls, "args": self.options.args}))


def module_inputs(x: torch.Tensor, attention: torch.Tensor | None) -> tuple[tuple, dict]:
    """A user's module takes the batch alone (no attention mask)."""
    return (x,), {}


def as_features(output) -> torch.Tensor:
    return output
