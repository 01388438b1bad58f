"""The blocks a body is made of (`model.block`): each gives one copy's parameters by name, its
residual branch as a function of them with a leading task axis, and the adapters that bring a
task's input to the block's activations and back.

A sharing scheme asks only this interface, so every scheme runs on every block: masks cover every
parameter of two or more dimensions, templates and experts are copies of all of a block's
parameters. `mlp` is the pre-norm residual MLP of lsmn_core.network.layers, batched by hand (one `bmm` for
all tasks, and the masked schemes' CPU path through MaskedLinear). Any other block is an nn.Module
computing the residual update of an activation (the body adds it); it runs functionally, its
parameters handed in, over the task axis with torch.func.vmap, shared parameters unbatched:
`conv` is the isometric block of the paper "Compositional Models: Multi-Task Learning and Knowledge
Transfer with Modular Networks" (section 4.1) on [C, H, W] activations, `attention` a pre-norm
transformer encoder block on token sequences [L, d].
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lsmn_core.network.layers import Head, block_branch, init_block, make_encoder, stacked_linear
from lsmn_core.errors import ConfigError, MissingModuleError
from lsmn_core.plugins import Registry, load_named
from lsmn_core.data.tasks import TaskSpec


class Block(abc.ABC):
    """One kind of isometric block of width `width` (inner width `hidden`)."""

    name: str
    fast_linear = False  # its branch takes a `linear` (the masked schemes' CPU path)

    def __init__(self, width: int, hidden: int):
        self.width, self.hidden = width, hidden
        with torch.random.fork_rng():  # the shapes, without moving the model's random stream
            self.shapes = {n: p.shape for n, p in self.init().items()}

    @classmethod
    def from_model(cls, model, args: dict) -> Block:
        """The block a ModelConfig asks for (`args`: the config's arguments for it). A block whose
        constructor takes more than (width, hidden) reads its other settings from the config here."""
        refuse_arguments(cls, args)
        return cls(model.width, model.width * model.expansion)

    @abc.abstractmethod
    def init(self) -> dict[str, torch.Tensor]:
        """One freshly initialised copy's parameters, by name (names without dots)."""

    @abc.abstractmethod
    def branch(self, x: torch.Tensor, params: dict[str, torch.Tensor], padding: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The residual update of x [T, B, *activation]; every parameter has a leading axis of T or
        1 (shared). `padding` [T, B, L] (token inputs) marks the positions that are padding."""

    def norms(self) -> tuple[str, ...]:
        """The parameters of its normalisation layers (a task may keep its own)."""
        return ()

    def prunable(self, name: str) -> bool:
        """Weights of two or more dimensions (linear, convolution, attention projections); biases and
        norms are never pruned."""
        return len(self.shapes[name]) >= 2

    def stacked(self, copies: int, unstacked=()) -> nn.ParameterDict:
        """`copies` freshly initialised blocks stacked along a new leading axis (tasks, templates or
        experts); parameters named in `unstacked` keep the first copy alone, without that axis."""
        blocks = [self.init() for _ in range(copies)]
        return nn.ParameterDict({name: nn.Parameter(blocks[0][name] if name in unstacked else
                                                    torch.stack([b[name] for b in blocks]))
                                 for name in blocks[0]})

    def shared(self, depth: int) -> nn.ModuleList:
        """`depth` freshly initialised blocks, one copy each (no task axis)."""
        return nn.ModuleList(self.stacked(1, unstacked=tuple(self.shapes)) for _ in range(depth))

    def encoder(self, spec: TaskSpec) -> nn.Module:
        """A task's input [B, *input] to the block's activation [B, *activation]."""
        refuse_tokens(spec, self.name)
        return make_encoder(spec, self.width)

    def head(self, spec: TaskSpec) -> nn.Module:
        """A task's head on the body's activation (a token task's head also takes the padding)."""
        return Head(self.width, spec.n_outputs)

    def summary(self, x: torch.Tensor) -> torch.Tensor:
        """One vector [N, width] per activation [N, *activation] (what a gate looks at)."""
        return x

    def weight_groups(self, name: str) -> WeightGroups | None:
        """How a weight's rows or columns fall into named units (attention heads) for drawing its masks;
        None: its rows are plain output channels."""
        return None


@dataclass(frozen=True)
class WeightGroups:
    """Consecutive runs of `size` rows (axis 0) or input columns (axis 1) of a weight, one per label."""

    axis: int
    size: int
    labels: tuple[str, ...]


class Mlp(Block):
    """The pre-norm residual MLP: W_out gelu(W_in LN(x) + b_in) + b_out on [width] activations."""

    name = "mlp"
    fast_linear = True

    def init(self):
        return init_block(self.width, self.hidden)

    def branch(self, x, params, padding=None, linear=stacked_linear):
        return block_branch(x, params, linear)  # position by position: padding changes nothing

    def norms(self):
        return ("norm_weight", "norm_bias")


class ModuleBlock(Block):
    """A block given as an nn.Module (built by `make()`) whose forward maps an activation to its
    residual update of the same shape. Its parameter `a.b` is named `a__b` here (names hold no dots)."""

    def __init__(self, width: int, hidden: int, make: Callable[[], nn.Module]):
        self.make = make
        super().__init__(width, hidden)
        with torch.random.fork_rng():
            module = make()
        self.norm_names = tuple(f"{m}__{p}".lstrip("_") for m, sub in module.named_modules()
                                if isinstance(sub, (nn.LayerNorm, nn.GroupNorm)) for p, _ in sub.named_parameters())
        self._template = module.to("meta")  # only its code is used: the parameters are handed in

    def init(self):
        return {name.replace(".", "__"): p.detach() for name, p in self.make().named_parameters()}

    def branch(self, x, params, padding=None):
        tasks = x.shape[0]
        own = {n.replace("__", "."): p for n, p in params.items() if p.shape[0] == tasks}
        shared = {n.replace("__", "."): p[0] for n, p in params.items() if p.shape[0] != tasks}

        def one(own_params, xt, pt):
            kwargs = {} if pt is None else {"padding": pt}
            return functional_call(self._template, {**own_params, **shared}, (xt,), kwargs)

        return vmap(one, in_dims=(0, 0, None if padding is None else 0))(own, x, padding)

    def norms(self):
        return self.norm_names


class ConvBranch(nn.Module):
    """MobileNet-style inverted residual: normalise, 1x1 expansion, depthwise k x k, squeeze-and-excite,
    1x1 projection (the body adds the input)."""

    def __init__(self, width: int, hidden: int, kernel: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, width)
        self.expand = nn.Conv2d(width, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.squeeze = nn.Linear(hidden, max(1, hidden // 4))
        self.excite = nn.Linear(max(1, hidden // 4), hidden)
        self.project = nn.Conv2d(hidden, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.depthwise(F.gelu(self.expand(self.norm(x)))))
        scale = torch.sigmoid(self.excite(F.gelu(self.squeeze(h.mean((-2, -1))))))
        return self.project(h * scale[..., None, None])


class AttentionBranch(nn.Module):
    """Pre-norm transformer encoder block, x + MHSA(LN x) then + MLP(LN .), as the update it adds."""

    def __init__(self, width: int, hidden: int, heads: int):
        super().__init__()
        if width % heads:
            raise ConfigError(f"model.heads: {heads} heads do not divide model.width {width}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., L, width]; `padding` [..., L] (True: padding) keeps every position from attending to
        padding, so a sequence's real tokens come out the same however far it is padded."""
        *batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(*batch, length, 3, self.heads, width // self.heads).unbind(-3)
        q, k, v = (t.transpose(-3, -2) for t in (q, k, v))  # [..., heads, L, d_head]
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads)
        if padding is not None:
            scores = scores.masked_fill(padding[..., None, None, :], -math.inf)
        weights = torch.softmax(scores, dim=-1)
        attended = self.out((weights @ v).transpose(-3, -2).reshape(*batch, length, width))
        return attended + self.down(F.gelu(self.up(self.norm2(x + attended))))


class Conv(ModuleBlock):
    """On [width, H, W]: images enter through a patchify convolution (kernel = stride = `patch`),
    vectors as a 1 x 1 map; heads see a 1x1 convolution and global average pooling."""

    name = "conv"

    def __init__(self, width: int, hidden: int, kernel: int, patch: int):
        self.patch = patch
        super().__init__(width, hidden, lambda: ConvBranch(width, hidden, kernel))

    @classmethod
    def from_model(cls, model, args):
        refuse_arguments(cls, args)
        return cls(model.width, model.width * model.expansion, model.kernel, model.patch)

    def encoder(self, spec):
        refuse_tokens(spec, self.name)
        if spec.modality == "image":
            return nn.Sequential(Unsqueeze(1), nn.Conv2d(1, self.width, self.patch, stride=self.patch))
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(spec.input_shape), self.width), Unsqueeze(-1),
                             Unsqueeze(-1))

    def head(self, spec):
        return nn.Sequential(nn.Conv2d(self.width, self.width, 1), nn.GELU(), Mean((-2, -1)),
                             Head(self.width, spec.n_outputs))

    def summary(self, x):
        return x.mean((-2, -1))


class LstmBranch(nn.Module):
    """A bidirectional LSTM over [..., L, width] (width / 2 per direction, as the sparse-sharing slides'
    encoder), after a LayerNorm, as the update the body adds. Written as a loop over positions, so
    that it runs under vmap with per-task weights; at padding the state carries over unchanged, so
    the backward direction starts at each sequence's last real token."""

    def __init__(self, width: int):
        super().__init__()
        if width % 2:
            raise ConfigError(f"model.width: the lstm block needs an even width (half per direction), got {width}")
        half = width // 2
        self.norm = nn.LayerNorm(width)
        self.forward_cell, self.backward_cell = nn.Linear(width + half, 4 * half), nn.Linear(width + half, 4 * half)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        length = h.shape[-2]
        pad = torch.zeros(h.shape[:-1], dtype=torch.bool, device=h.device) if padding is None else padding
        outputs = [self._run(self.forward_cell, h, pad, range(length)),
                   self._run(self.backward_cell, h, pad, range(length - 1, -1, -1))]
        return self.out(torch.cat(outputs, -1))

    @staticmethod
    def _run(cell: nn.Linear, x: torch.Tensor, pad: torch.Tensor, order) -> torch.Tensor:
        half = cell.out_features // 4
        state = cell_state = x.new_zeros(*x.shape[:-2], half)
        outputs: dict[int, torch.Tensor] = {}
        for t in order:
            i, f, g, o = cell(torch.cat([x[..., t, :], state], -1)).chunk(4, -1)
            new_cell = torch.sigmoid(f) * cell_state + torch.sigmoid(i) * torch.tanh(g)
            new_state = torch.sigmoid(o) * torch.tanh(new_cell)
            keep = pad[..., t, None]
            cell_state, state = torch.where(keep, cell_state, new_cell), torch.where(keep, state, new_state)
            outputs[t] = state
        return torch.stack([outputs[t] for t in range(x.shape[-2])], -2)


class SequenceBlock(ModuleBlock):
    """A block on sequences [L, width]: token ids through an embedding, images as patches (kernel =
    stride = `patch`), vectors one token per feature, each with a learned position; heads see the
    mean token (the mean of the real ones, or each token, for token tasks)."""

    def __init__(self, width: int, hidden: int, patch: int, make: Callable[[], nn.Module]):
        self.patch = patch
        super().__init__(width, hidden, make)

    def encoder(self, spec):
        if spec.reads_ids:  # ids [B, L] -> embeddings with positions; the padding id embeds as zeros
            return nn.Sequential(nn.Embedding(spec.vocab, self.width, padding_idx=spec.pad),
                                 Positions(spec.input_shape[0], self.width))
        if spec.modality == "image":
            rows, cols = (n // self.patch for n in spec.input_shape)
            return nn.Sequential(Unsqueeze(1), nn.Conv2d(1, self.width, self.patch, stride=self.patch),
                                 nn.Flatten(2), Transpose(), Positions(rows * cols, self.width))
        return nn.Sequential(nn.Flatten(), Unsqueeze(-1), nn.Linear(1, self.width),
                             Positions(math.prod(spec.input_shape), self.width))

    def head(self, spec):
        if not spec.reads_ids:
            return nn.Sequential(Mean(-2), Head(self.width, spec.n_outputs))
        return TokenHead(self.width, spec.n_outputs, per_token=spec.kind == "tagging")

    def summary(self, x):
        return x.mean(-2)


class Attention(SequenceBlock):
    """The pre-norm transformer encoder block on sequences."""

    name = "attention"

    def __init__(self, width: int, hidden: int, heads: int, patch: int):
        self.heads = heads
        super().__init__(width, hidden, patch, lambda: AttentionBranch(width, hidden, heads))

    @classmethod
    def from_model(cls, model, args):
        refuse_arguments(cls, args)
        return cls(model.width, model.width * model.expansion, model.heads, model.patch)

    def weight_groups(self, name):
        """The query, key and value rows of each head; the output projection's input columns per head."""
        heads = range(self.heads)
        if name == "qkv__weight":
            return WeightGroups(0, self.width // self.heads, tuple(f"{part} head {h}" for part in "qkv" for h in heads))
        if name == "out__weight":
            return WeightGroups(1, self.width // self.heads, tuple(f"head {h}" for h in heads))
        return None


class Lstm(SequenceBlock):
    """A bidirectional LSTM block on sequences (LstmBranch)."""

    name = "lstm"

    def __init__(self, width: int, hidden: int, patch: int):
        super().__init__(width, hidden, patch, lambda: LstmBranch(width))

    @classmethod
    def from_model(cls, model, args):
        refuse_arguments(cls, args)
        return cls(model.width, model.width * model.expansion, model.patch)


class TokenHead(nn.Module):
    """A token task's head: per token (tagging, [B, L, C]), or on the mean of the real tokens."""

    def __init__(self, width: int, n_outputs: int, per_token: bool):
        super().__init__()
        self.per_token = per_token
        self.head = Head(width, n_outputs)

    def forward(self, h: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        if self.per_token:
            return self.head(h)
        real = (~padding).unsqueeze(-1).to(h.dtype)
        return self.head((h * real).sum(-2) / real.sum(-2))


def refuse_arguments(block: type[Block], args: dict) -> None:
    """The built-in blocks read their settings from model.* (width, heads, kernel, patch), not from args."""
    if args:
        raise ConfigError(f"model.block: the {block.name} block takes no args (its settings are model.width, "
                          f"model.heads, model.kernel, model.patch); got {', '.join(map(str, args))[:80]}")


def refuse_tokens(spec: TaskSpec, block: str) -> None:
    if spec.reads_ids:
        raise ConfigError(f"task {spec.name}: token tasks need model.block attention or lstm, not {block}")


class Unsqueeze(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.unsqueeze(self.dim)


class Transpose(nn.Module):
    """[B, C, L] -> [B, L, C]."""

    def forward(self, x):
        return x.transpose(1, 2)


class Mean(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.mean(self.dims)


class Positions(nn.Module):
    """A learned embedding added to each of `length` positions."""

    def __init__(self, length: int, width: int):
        super().__init__()
        self.embedding = nn.Parameter(0.02 * torch.randn(length, width))

    def forward(self, x):
        return x + self.embedding


class UserModuleBlock(ModuleBlock):
    """A user's nn.Module class on [..., width] activations, built `cls(width=width, **args)` (a
    class, never unpickled weights); the mlp block's encoders and heads. `name` is what messages and
    the run call it (its registered name, or its import path)."""

    def __init__(self, width: int, hidden: int, cls: type[nn.Module], args: dict, name: str):
        self.name = name

        def make() -> nn.Module:
            try:
                return cls(width=width, **args)
            except TypeError as exc:
                raise ConfigError(f"model.block: {name}(width={width}, **args) failed: {exc}") from None

        super().__init__(width, hidden, make)


def _check_block(name: str, obj) -> str | None:
    """A block is a Block class (it brings its own adapters) or an nn.Module class with the user-block
    contract: `Class(width=..., **args)` mapping [..., width] to a residual update of that shape."""
    if isinstance(obj, type) and issubclass(obj, (Block, nn.Module)):
        return None
    return f"{obj!r:.80} is neither a Block nor an nn.Module class"


# Unknown or unloadable blocks are missing modules: a stored run still shows what it holds without them.
BLOCKS: Registry[type] = Registry("lsmn.blocks", "block", _check_block, error=MissingModuleError)


def make_block(model) -> Block:
    """The block a ModelConfig asks for: a registered name (with `args` when given as a mapping with
    `name`), or a user's nn.Module class imported by its path (`class: "package.module:ClassName"`)."""
    hidden = model.width * model.expansion
    choice = model.block
    if isinstance(choice, str) or choice.name is not None:
        name, args = (choice, {}) if isinstance(choice, str) else (choice.name, choice.args)
        cls = BLOCKS.get(name, "model.block")
    else:
        name, args = str(choice.cls), choice.args
        cls = load_named(name, "model.block.class")
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"model.block.class: {name[:80]!r} is not an nn.Module class")
    if issubclass(cls, Block):
        return cls.from_model(model, args)
    if issubclass(cls, nn.Module):
        return UserModuleBlock(model.width, hidden, cls, args, name)
    raise ConfigError(f"model.block: {name} is neither a Block nor an nn.Module class")
