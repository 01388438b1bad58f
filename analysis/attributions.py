"""What each task looks at, with captum: input attributions per task, and how much each module
contributes (layer conductance of a body block's residual update, or of a layer of a task's own
network)."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import DeepLift, InputXGradient, Saliency
from torch import nn

CAPTUM_METHODS = {"Saliency": Saliency, "DeepLift": DeepLift, "Input x Gradient": InputXGradient}
METHODS = ["Integrated Gradients", *CAPTUM_METHODS]  # Integrated Gradients: from explain's one pass


class TaskNetwork(nn.Module):
    """One task of a multitask model as a plain network, with an identity tap on its input and on every
    module its path runs through (a body block's residual update, or a layer of the task's own network)."""

    def __init__(self, model, task: int):
        super().__init__()
        self.model, self.task = model, task
        self.input_tap = nn.Identity()
        self.taps = nn.ModuleList(nn.Identity() for _ in range(model.module_count(task)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_tapped(self.input_tap(x), self.task, self.taps)


def _target(network: TaskNetwork, x: torch.Tensor, target: torch.Tensor | None):
    """Explain the predicted class (classification) or the output (regression) unless told otherwise."""
    if network.model.specs[network.task].kind == "regression":
        return 0
    if target is None:
        with torch.no_grad():
            target = network(x).argmax(-1)
    return target


def _gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    """Weights and points of n-point Gauss-Legendre quadrature on [0, 1] (captum's "gausslegendre")."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return list(0.5 * weights), list(0.5 * (1 + nodes))


def _tap_gradients(network: TaskNetwork, x: torch.Tensor, target) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every tap's output on x (input tap first) and the gradient of the target outputs' sum there."""
    taps = [network.input_tap, *network.taps]
    outputs: list[torch.Tensor | None] = [None] * len(taps)
    hooks = [tap.register_forward_hook(lambda _, __, out, i=i: outputs.__setitem__(i, out))
             for i, tap in enumerate(taps)]
    try:
        out = network(x)
    finally:
        for hook in hooks:
            hook.remove()
    selected = out[:, target] if isinstance(target, int) else out.gather(1, target[:, None])
    return list(torch.autograd.grad(selected.sum(), outputs)), outputs


def explain(model, task: int, x: torch.Tensor, method: str = "Integrated Gradients",
            target: torch.Tensor | None = None, n_steps: int = 24) -> tuple[torch.Tensor, list[float]]:
    """The task's input attributions by `method` (same shape as x) and its block importance: per body
    block, the mean absolute layer conductance of its residual update, i.e. how much of the task's
    output (against an all-zero input) flows through that block.

    Both are integrals along the straight path from the zero input to x. One forward and backward
    over n_steps + 1 Gauss-Legendre points of that path gives every block's conductance (captum's
    LayerConductance computation, which takes one layer per call and would run the same points once
    per block) and the input's gradients there, which weighted and times x are Integrated Gradients
    (captum's, method "gausslegendre", n_steps + 1 points). The other methods are captum's own."""
    network = TaskNetwork(model.eval(), task)
    target = _target(network, x, target)
    weights, alphas = _gauss_legendre(n_steps + 1)
    scaled = torch.cat([alpha * x for alpha in alphas]).requires_grad_()  # baseline: all zeros
    gradients, outputs = _tap_gradients(network, scaled, target if isinstance(target, int)
                                        else target.repeat(n_steps + 1))
    n = len(x)
    importance = []
    for gradient, output in zip(gradients[1:], outputs[1:]):
        conductance = ((output[n:] - output[:-n]) * gradient[:-n]).reshape(n_steps, n, *output.shape[1:]).sum(0)
        importance.append(conductance.abs().sum(dim=tuple(range(1, conductance.dim()))).mean().item())
    if method == "Integrated Gradients":
        along_path = gradients[0].reshape(n_steps + 1, *x.shape)
        attributions = x * sum(w * g for w, g in zip(weights, along_path))
    else:
        kwargs = {"baselines": torch.zeros_like(x)} if method == "DeepLift" else {}
        if method == "Saliency":
            kwargs["abs"] = True
        explainer = CAPTUM_METHODS[method](network)
        attributions = explainer.attribute(x.clone().requires_grad_(True), target=target, **kwargs)
    return attributions.detach(), importance
