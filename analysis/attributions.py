"""What each task looks at, with captum: input attributions per task, and how much each module
contributes (layer conductance of a body block's residual update, or of a hyper task's layer)."""

from __future__ import annotations

import torch
from captum._utils.common import _expand_target
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import DeepLift, InputXGradient, IntegratedGradients, Saliency
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from lsmn_core.schemes.base import IsometricScheme

METHODS = {"Integrated Gradients": IntegratedGradients, "Saliency": Saliency, "DeepLift": DeepLift,
           "Input x Gradient": InputXGradient}


class TaskNetwork(nn.Module):
    """One task of a multitask model as a plain network, with an identity tap on every module (a body
    block's residual update; for the hyper scheme, each layer of the task's own network)."""

    def __init__(self, model, task: int):
        super().__init__()
        self.model, self.task = model, task
        self.isometric = isinstance(model.body, IsometricScheme)  # else hyper: a whole network per task
        modules = model.body.depth if self.isometric else len(model.body.layers[task])
        self.taps = nn.ModuleList(nn.Identity() for _ in range(modules))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.isometric:
            return self.model.body.run(x, [self.task], self.taps)[0]
        spec = self.model.specs[self.task]
        h = self.model.encoders[self.model.encoder_key(spec)](x).unsqueeze(0)
        tasks = torch.tensor([self.task], device=x.device)
        for layer, tap in enumerate(self.taps):
            h = h + tap(self.model.body.layer_update(h, tasks, layer)[0]).unsqueeze(0)  # tap sees [B, width]
        return self.model.heads[spec.name](h[0])


def _target(network: TaskNetwork, x: torch.Tensor, target: torch.Tensor | None):
    """Explain the predicted class (classification) or the output (regression) unless told otherwise."""
    if network.model.specs[network.task].kind == "regression":
        return 0
    if target is None:
        with torch.no_grad():
            target = network(x).argmax(-1)
    return target


def input_attributions(model, task: int, x: torch.Tensor, method: str = "Integrated Gradients",
                       target: torch.Tensor | None = None) -> torch.Tensor:
    """Attribution of each input element to the task's output, same shape as x."""
    network = TaskNetwork(model.eval(), task)
    target = _target(network, x, target)
    explainer = METHODS[method](network)
    kwargs = {"baselines": torch.zeros_like(x)} if method in ("Integrated Gradients", "DeepLift") else {}
    if method == "Saliency":
        kwargs["abs"] = True
    return explainer.attribute(x.clone().requires_grad_(True), target=target, **kwargs).detach()


def block_importance(model, task: int, x: torch.Tensor, target: torch.Tensor | None = None,
                     n_steps: int = 24) -> list[float]:
    """Per body block, the mean absolute layer conductance of its residual update: how much of the
    task's output (against an all-zero input) flows through that block.

    captum's LayerConductance takes one layer per call, and a 16-block network would run the same
    interpolated inputs 16 times; this is its computation (Gauss-Legendre steps, gradient times the
    step's change of the layer's output) for every tap from one forward and backward pass."""
    network = TaskNetwork(model.eval(), task)
    target = _target(network, x, target)
    alphas = approximation_parameters("gausslegendre")[1](n_steps + 1)
    scaled = torch.cat([alpha * x for alpha in alphas]).requires_grad_()  # baseline: all zeros
    gradients, outputs = compute_layer_gradients_and_eval(network, list(network.taps), (scaled,),
                                                          target_ind=_expand_target(target, n_steps + 1))
    n = len(x)
    importance = []
    for (gradient,), (output,) in zip(gradients, outputs):
        conductance = ((output[n:] - output[:-n]) * gradient[:-n]).reshape(n_steps, n, *output.shape[1:]).sum(0)
        importance.append(conductance.abs().sum(dim=tuple(range(1, conductance.dim()))).mean().item())
    return importance
