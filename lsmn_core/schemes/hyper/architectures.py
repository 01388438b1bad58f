"""Per-task architectures for the hyper scheme (MUiR): each task has its own network, which need not
look like any other task's: a plain linear model, an MLP, a 2-D or a 1-D convolutional network.

Networks are run functionally, with their weights handed in, so that the weights can be generated
from hypermodules; tasks that share an architecture run together, batched over a leading task axis
(one `baddbmm` per linear layer, one grouped convolution per conv layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lsmn_core.errors import ConfigError
from lsmn_core.tasks import TaskSpec

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
