"""Per-task architectures for the hyper scheme (MUiR): each task has its own network, which need not
look like any other task's: a plain linear model, an MLP, a 2-D or a 1-D convolutional network.

Networks are run functionally, with their weights handed in, so that the weights can be generated
from hypermodules; tasks that share an architecture run together, batched over a leading task axis
(one `baddbmm` per linear layer, one grouped convolution per conv layer). Biases and weights that do
not divide into blocks stay with their task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from torch import nn

from lsmn_core.errors import ConfigError
from lsmn_core.schemes.hyper.hypermodules import Hypermodules, assemble
from lsmn_core.schemes.hyper.network import HyperNet
from lsmn_core.data.tasks import TaskSpec

ARCHITECTURES = ("linear", "mlp", "conv", "conv1d")


@dataclass(frozen=True)
class Layer:
    """One weight layer: kind "linear", "conv2d" or "conv1d", out x in channels, a square kernel."""

    kind: str
    out: int
    inp: int
    kernel: int = 1

    @property
    def weight_shape(self) -> tuple[int, ...]:
        spatial = {"linear": (), "conv1d": (self.kernel,), "conv2d": (self.kernel, self.kernel)}[self.kind]
        return (self.out, self.inp, *spatial)


def default_architecture(spec: TaskSpec) -> str:
    return {"image": "conv", "sequence": "conv1d"}.get(spec.modality, "mlp")


def build_layers(architecture: str, spec: TaskSpec, width: int, depth: int) -> tuple[Layer, ...]:
    """The layers of `architecture` for a task's input shape and output size."""
    if spec.reads_ids:
        raise ConfigError(f"task {spec.name}: token tasks need a body of attention blocks (scheme.network: body)")
    features, outputs = math.prod(spec.input_shape), spec.n_outputs
    if architecture == "linear":
        return (Layer("linear", outputs, features),)
    if architecture == "mlp":
        sizes = [features] + [width] * depth + [outputs]
        return tuple(Layer("linear", o, i) for i, o in zip(sizes, sizes[1:]))
    if architecture == "conv":
        if len(spec.input_shape) != 2:
            raise ConfigError(f"task {spec.name}: architecture 'conv' needs image input, got shape {spec.input_shape}")
        flat = width * (spec.input_shape[0] // 4) * (spec.input_shape[1] // 4)
        convs = (Layer("conv2d", width, 1, 3), Layer("conv2d", width, width, 3))
    elif architecture == "conv1d":
        if len(spec.input_shape) != 1:
            raise ConfigError(f"task {spec.name}: architecture 'conv1d' needs sequence input, "
                              f"got shape {spec.input_shape}")
        flat = width * (spec.input_shape[0] // 4)
        convs = (Layer("conv1d", width, 1, 5), Layer("conv1d", width, width, 5))
    else:
        raise ConfigError(f"task {spec.name}: unknown architecture {architecture!r} "
                          f"(known: {', '.join(ARCHITECTURES)})")
    return convs + (Layer("linear", width, flat), Layer("linear", outputs, width))


def run_layers(layers: tuple[Layer, ...], params: list[tuple[torch.Tensor, torch.Tensor]],
               x: torch.Tensor, taps=None) -> torch.Tensor:
    """x [G, B, *input] through G networks of the same layers; params[i] = (weight [G, *shape], bias [G, out]).

    `taps` (one network only, G = 1): a module per layer applied to its output [B, ...], so captum
    can attribute through each layer."""
    groups, batch = x.shape[:2]
    h = x.unsqueeze(2) if layers[0].kind != "linear" else x  # add the channel axis for convolutions
    for i, (layer, (weight, bias)) in enumerate(zip(layers, params)):
        if layer.kind == "linear":
            h = torch.baddbmm(bias.unsqueeze(1), h.reshape(groups, batch, -1), weight.transpose(1, 2))
            if i < len(layers) - 1:
                h = F.relu(h)
        else:  # tasks become groups of one grouped convolution: [B, G * channels, *spatial]
            conv, pool = (F.conv2d, F.max_pool2d) if layer.kind == "conv2d" else (F.conv1d, F.max_pool1d)
            spatial = h.shape[3:]
            merged = h.transpose(0, 1).reshape(batch, groups * layer.inp, *spatial)
            out = conv(merged, weight.reshape(groups * layer.out, *weight.shape[2:]), bias.reshape(-1),
                       padding=layer.kernel // 2, groups=groups)
            out = pool(F.relu(out), 2)
            h = out.reshape(batch, groups, layer.out, *out.shape[2:]).transpose(0, 1)
        if taps is not None:
            h = taps[i](h[0]).unsqueeze(0)
    return h


class TaskNetworks(Hypermodules):
    """Every task its own network (its config's `architecture`, default by its input), its weights
    generated from the hypermodules."""

    @classmethod
    def build_network(cls, specs, config):
        chosen = {t.name: t.architecture for t in config.tasks}
        architectures = [chosen.get(s.name) or default_architecture(s) for s in specs]
        return HyperNet(specs, cls(config.scheme, specs, architectures, config.model.width, config.model.depth))

    def __init__(self, options, specs, architectures: list[str], width: int, depth: int):
        super().__init__(options, len(specs), 1, None)
        m, n = options.block
        self.layers = [build_layers(a, s, width, depth) for a, s in zip(architectures, specs)]
        self.input_shapes = [tuple(s.input_shape) for s in specs]
        self.own = nn.ParameterDict()  # per task: biases, and weights that do not divide into blocks
        for t, layers in enumerate(self.layers):
            for i, layer in enumerate(layers):
                shape = layer.weight_shape
                fan_in = math.prod(shape[1:])
                self.own[f"{t}_{i}_bias"] = nn.Parameter(torch.empty(layer.out).uniform_(-1, 1) / math.sqrt(fan_in))
                if layer.out % m or layer.inp % n:
                    self.own[f"{t}_{i}_weight"] = nn.Parameter(torch.randn(shape) / math.sqrt(fan_in))
        self.slots = self.share([[layer.weight_shape for layer in layers] for layers in self.layers])

    def task_params(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Weights and biases of tasks that share an architecture, stacked [G, ...] layer by layer."""
        m, n = self.options.block
        locations = torch.tensor([loc for t in tasks for loc in self.task_locations(t)], dtype=torch.long)
        blocks = self.blocks(locations.to(self.gain.device, non_blocking=True)).reshape(len(tasks), -1, m, n)
        params = []
        for i, layer in enumerate(self.layers[tasks[0]]):
            bias = torch.stack([self.own[f"{t}_{i}_bias"] for t in tasks])
            slot = self.slots[tasks[0]][i]
            if slot is None:
                params.append((torch.stack([self.own[f"{t}_{i}_weight"] for t in tasks]), bias))
                continue
            params.append((assemble(blocks[:, slot[0] : slot[0] + slot[1]], layer.weight_shape), bias))
        return params

    def run(self, x: torch.Tensor, tasks: list[int], taps=None) -> list[torch.Tensor]:
        """Outputs of `tasks` for x (shared [B, ...] or per task [T', B, ...]), batched per architecture;
        `taps` see each layer's output of a single task (see run_layers)."""
        shared_input = x.dim() == 1 + len(self.input_shapes[tasks[0]])
        outputs: dict[int, torch.Tensor] = {}
        groups: dict[tuple, list[int]] = {}
        for position, t in enumerate(tasks):
            groups.setdefault(self.layers[t], []).append(position)
        for layers, positions in groups.items():
            group_tasks = [tasks[p] for p in positions]
            xs = x.expand(len(positions), *x.shape) if shared_input else x[positions]
            out = run_layers(layers, self.task_params(group_tasks), xs, taps)
            for i, p in enumerate(positions):
                outputs[p] = out[i]
        return [outputs[p] for p in range(len(tasks))]

    def usage(self, task):
        used = super().usage(task)
        for name in self.own:
            used[f"own.{name}"][...] = name.split("_", 1)[0] == str(task)
        return used

    def density(self):
        return torch.ones(self.n_tasks, 1)
