"""Run configuration: typed dataclasses built from YAML, validated with one-line messages.

Every key of the YAML file maps to a dataclass field; unknown keys, wrong types and values out of
range raise ConfigError naming the key. `--set a.b=value` overrides go through the same path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lsmn_core.errors import ConfigError
from lsmn_core.network.blocks import BLOCKS
from lsmn_core.pretrained import LOADERS, loader_of
from lsmn_core.pretrained.models import is_name
from lsmn_core.options import as_data, build, check, describe
from lsmn_core.schemes import DEFAULT_KIND, check_config, scheme_options
from lsmn_core.data.tasks import task_name_problem


class YamlLoader(yaml.SafeLoader):
    """Safe YAML that also reads 1e-3 and 1e30 as numbers (YAML 1.2); PyYAML alone makes them strings."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


class Composer(YamlLoader):
    """Refuses aliases: an alias bomb is a few lines that expand to gigabytes in whatever walks them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise ConfigError("YAML aliases (*name) are not supported in configs; write the value out")
        return super().compose_node(parent, index)


CONFIG_LIMIT = 2**20  # bytes of a config file
DEPTH_LIMIT = 32  # nesting of mappings and lists in a config


def load_yaml(text: str):
    """Safe YAML without aliases, of bounded nesting, integers of at most 4,300 digits (int()'s own limit)."""
    try:
        data = yaml.load(text, Loader=Composer)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise ConfigError(f"config: nested more than {DEPTH_LIMIT} levels deep") from None
    except ValueError as exc:  # an integer longer than int() converts
        raise ConfigError(f"config: {str(exc)[:120]}") from None
    if _depth(data) > DEPTH_LIMIT:
        raise ConfigError(f"config: nested more than {DEPTH_LIMIT} levels deep")
    return data


def _depth(value, level: int = 0) -> int:
    if level > DEPTH_LIMIT:
        return level
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((_depth(v, level + 1) for v in children), default=level)


Check = tuple[Callable[[Any], bool], str]  # a predicate and what it says a value must be
positive: Check = (lambda v: v > 0, "must be > 0")
seed_range: Check = (lambda v: 0 <= v < 2**32, "must be in 0 .. 2**32 - 1")


def between(low: int, high: int) -> Check:
    """A check of an integer's range (huge values would allocate terabytes or loop for hours)."""
    return lambda v: low <= v <= high, f"must be in {low} .. {high:,}"
fraction: Check = (lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)")


@dataclass
class TaskConfig:
    """One task: a built-in data set and target, a user file (.npz with X, y or .csv), or a dataset factory."""

    name: str
    dataset: str | None = None
    target: str | None = None
    domain: str = "original"
    file: str | None = None
    dev_file: str | None = None  # a given dev split (.csv or .npz X, y) for a task with a file
    test_file: str | None = None  # a given test split, likewise; splits not given are drawn from the training rows
    source: str | None = None  # a dataset factory "package.module:function", called with `args`
    args: dict = field(default_factory=dict)
    kind: Literal["classification", "regression"] | None = None
    classes: int | None = check(lambda v: v is None or 0 < v <= 2**20, "must be in 1 .. 1,048,576", None)  # streamed
    limit: int | None = check(lambda v: v is None or v > 0, "must be > 0", None)
    standardise: bool = True  # user vector features scaled by train statistics
    tokens: bool = False  # X holds integer token ids (0 the padding); y per sequence, or per token [N, L] (tagging)
    text: str | None = None  # a .csv task's column of text (read through the checkpoint's tokenizer)
    architecture: str | None = None  # the task's own network, for schemes that build one per task


@dataclass
class UserBlock:
    """A block with arguments: a registered block by its `name` (lsmn.blocks), or a user's class
    imported by its path (`class: "package.module:ClassName"`), an nn.Module built
    `ClassName(width=model.width, **args)` that maps activations [..., width] to their residual
    update of the same shape. Give one of `name` and `class`."""

    cls: str | None = field(default=None, metadata={"key": "class"})
    args: dict = field(default_factory=dict)
    name: str | None = None


@dataclass
class ModelConfig:
    width: int = check(*between(1, 2**16), 64)
    depth: int = check(*between(1, 1024), 4)
    expansion: int = check(*between(1, 64), 2)  # a block's inner width is width * expansion
    block: str | UserBlock = "mlp"  # the body's blocks by name (lsmn.blocks: mlp, conv, attention, lstm, plugins')
    kernel: int = check(lambda v: 0 < v < 64 and v % 2 == 1, "must be an odd number in 1 .. 63", 3)  # conv: depthwise
    heads: int = check(*between(1, 1024), 4)  # attention: heads
    patch: int = check(*between(1, 1024), 2)  # conv and attention: an image enters as patch x patch patches
    # a checkpoint to open instead of the Studio's own body: {hf: FOLDER} or {class: "package.module:Class",
    # args: {...}, weights: FILE} (lsmn.pretrained); its repeated blocks (a module list's dotted path,
    # detected when omitted), the weights in them that the scheme acts on (default: every linear and
    # convolution weight), and how a sentence task reads the tokens
    pretrained: dict | None = None
    layers: str | None = None
    targets: list[str] | None = None
    pool: Literal["mean", "cls"] = "mean"
    # the checkpoint's weights fine-tune at train.lr times this (its heads, new, at train.lr)
    finetune_lr_scale: float = check(*positive, 0.05)


@dataclass
class TrainConfig:
    steps: int = check(*between(0, 10**9), 1000)
    batch_size: int = check(*between(1, 2**20), 64)
    lr: float = check(*positive, 1e-3)
    weight_decay: float = check(lambda v: v >= 0, "must be >= 0", 0.0)
    eval_every: int = check(*between(1, 10**9), 100)
    patience: int = check(lambda v: v >= 0, "must be >= 0 (0 turns early stopping off)", 5)
    sampling: Literal["proportional", "round_robin", "all"] = "proportional"  # all: every task each step, losses summed
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # on CUDA, training forwards run under bf16 autocast (evaluation stays float32)
    tensorboard: str | None = None  # a folder: the curves also go to TensorBoard event files in <folder>/<run id>


@dataclass
class DataConfig:
    split_seed: int = check(*seed_range, 0)
    dev_fraction: float = check(*fraction, 0.2)
    test_fraction: float = check(*fraction, 0.2)
    workers: int = check(*between(0, 64), 0)  # DataLoader worker processes for streamed tasks
    pin_memory: bool = False  # streamed batches in pinned host memory (CUDA only)
    max_length: int = check(*between(2, 65536), 128)  # text: tokens per sequence at most
    tokenizer: str | None = None  # text without a checkpoint: a folder holding the tokenizer to read it with


@dataclass
class RunConfig:
    name: str
    tasks: list[TaskConfig]
    seed: int = check(*seed_range, 0)
    model: ModelConfig = field(default_factory=ModelConfig)
    scheme: Any = None  # the options dataclass of the chosen scheme kind (see lsmn_core.schemes)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return as_data(self)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides (value parsed as YAML) to raw config data."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {path}: '{key}' is not a mapping")
        try:
            node[keys[-1]] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {path}: value is not valid YAML ({exc.problem})") from None
    return data


def parse_config(data, where: str = "config", stored: bool = False) -> RunConfig:
    """Validate raw config data (a dict) into a RunConfig, including the scheme's own options and
    the scheme's own checks of the whole config. A new config's block must be a registered name; a
    `stored` one (a run's, read again) is taken as it is, since what it names may have been
    uninstalled since, and only what needs the block (building its model) says so."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {describe(data)}")
    data = dict(data)
    scheme_raw = data.pop("scheme", {"kind": DEFAULT_KIND})
    config = build(RunConfig, data, where)
    if not isinstance(scheme_raw, dict) or "kind" not in scheme_raw:
        raise ConfigError("scheme: expected a mapping with a 'kind' key")
    config.scheme = build(scheme_options(scheme_raw["kind"]), scheme_raw, "scheme")
    if not config.tasks:
        raise ConfigError("tasks: at least one task is required")
    names = [t.name for t in config.tasks]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"tasks: task name '{duplicate}' appears twice")
    for i, task in enumerate(config.tasks):
        if problem := task_name_problem(task.name):
            raise ConfigError(f"tasks[{i}].name: {str(task.name)[:40]!r} {problem}")
        if sum(v is not None for v in (task.dataset, task.file, task.source)) != 1:
            raise ConfigError(f"tasks[{i}] ({task.name}): give exactly one of 'dataset', 'file' or 'source'")
        if task.file is None and (task.dev_file or task.test_file):
            raise ConfigError(f"tasks[{i}] ({task.name}): dev_file and test_file go with a 'file'")
    block = config.model.block
    if not isinstance(block, str) and (block.cls is None) == (block.name is None):
        raise ConfigError("model.block: give one of 'name' (a registered block) or 'class' (package.module:ClassName)")
    if not stored and config.model.pretrained is not None:
        loader_of(config.model.pretrained)  # its options, checked before anything loads
    name = block if isinstance(block, str) else block.name
    if not stored and name is not None and name not in BLOCKS:
        raise ConfigError(f"model.block: unknown block {name[:60]!r} (known: {', '.join(BLOCKS.names())}; or give "
                          "{class: \"package.module:ClassName\"})")
    if config.data.dev_fraction + config.data.test_fraction >= 1:
        raise ConfigError("data: dev_fraction + test_fraction must be below 1")
    check_config(config)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config file, apply overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.stat().st_size > CONFIG_LIMIT:
            raise ConfigError(f"{path}: more than {CONFIG_LIMIT:,} bytes, too large for a config")
        data = load_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if isinstance(data, dict):
        data = apply_overrides(data, list(overrides))
        _resolve_task_files(data, path.parent)
    return parse_config(data)


def _resolve_task_files(data: dict, base: Path) -> None:
    """Make relative paths relative to the config file, so runs can be started anywhere: task files,
    a checkpoint's (the keys its loader names as paths; a bare name that is no file beside the
    config is a checkpoint of the models folder, and stays a name) and a tokenizer's folder."""
    tasks = data.get("tasks")
    places = [(task, key, True) for task in (tasks if isinstance(tasks, list) else []) if isinstance(task, dict)
              for key in ("file", "dev_file", "test_file")]  # another type is parse_config's to refuse
    model, settings = data.get("model"), data.get("data")
    pretrained = model.get("pretrained") if isinstance(model, dict) else None
    if isinstance(pretrained, dict):
        places += [(pretrained, key, False) for name in pretrained if name in LOADERS
                   for key in getattr(LOADERS.get(name), "path_keys", ())]
    if isinstance(settings, dict):
        places.append((settings, "tokenizer", False))
    for holder, key, always in places:
        value = holder.get(key)
        if isinstance(value, str) and (always or not is_name(value) or (base / value).exists()):
            file = Path(value).expanduser()
            holder[key] = str(file if file.is_absolute() else (base / file).resolve())
