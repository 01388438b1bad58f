"""What each task looks at, with captum: input attributions per task, and how much each module
contributes (layer conductance of a body block's residual update, or of a layer of a task's own
network).

Token ids are not a path from a baseline, so a token task is attributed at its embeddings: the path
runs from zero embeddings to the sequence's own (positions and the padding mask stay as they are),
and each token's attribution is the sum over its embedding's dimensions."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import DeepLift, InputXGradient, Saliency
from torch import nn

CAPTUM_METHODS = {"Saliency": Saliency, "DeepLift": DeepLift, "Input x Gradient": InputXGradient}
METHODS = ["Integrated Gradients", *CAPTUM_METHODS]  # Integrated Gradients: from explain's one pass
TOKEN_METHODS = ["Integrated Gradients", "Saliency", "Input x Gradient"]  # at the embeddings


class TaskNetwork(nn.Module):
    """One task of a multitask model as a plain network, with an identity tap on its input (a token
    task's: on its embeddings, scaled by `path`) and on every module its path runs through (a body
    block's residual update, or a layer of the task's own network)."""

    def __init__(self, model, task: int):
        super().__init__()
        self.model, self.task = model, task
        self.tokens = model.specs[task].reads_ids
        self.input_tap = nn.Identity()
        self.taps = nn.ModuleList(nn.Identity() for _ in range(model.module_count(task)))
        self.path: torch.Tensor | None = None  # token tasks: each row's point on the path (None: 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens:
            return self.model.forward_tapped(self.input_tap(x), self.task, self.taps)
        hooks = [m.register_forward_hook(self._embedded) for m in self.model.token_embeddings()]
        try:
            return self.model.forward_tapped(x, self.task, self.taps)
        finally:
            for hook in hooks:
                hook.remove()

    def _embedded(self, module, inputs, embeddings: torch.Tensor) -> torch.Tensor:
        if not embeddings.requires_grad:  # a frozen checkpoint's embeddings of ids: the path starts here
            embeddings = embeddings.detach().requires_grad_()
        if self.path is None:
            return self.input_tap(embeddings)
        return self.input_tap(embeddings * self.path.to(embeddings).view(-1, *[1] * (embeddings.dim() - 1)))


def _target(network: TaskNetwork, x: torch.Tensor, target: torch.Tensor | None):
    """Explain the predicted class (classification, and every token's for tagging) or the output
    (regression) unless told otherwise."""
    if network.model.specs[network.task].kind == "regression":
        return 0
    if target is None:
        with torch.no_grad():
            target = network(x).argmax(-1)
    return target


def _picked(out: torch.Tensor, target, ids: torch.Tensor | None, position: int | None) -> torch.Tensor:
    """The outputs being explained: the target class (per token for tagging: the real tokens', or the
    one at `position`), per row."""
    if isinstance(target, int):
        return out[..., target]
    picked = out.gather(-1, target[..., None])[..., 0]
    if picked.dim() == 2 and ids is not None:  # tagging [B, L]
        real = ids != 0
        if position is not None:
            real = real & (torch.arange(real.shape[1], device=real.device) == position)
        picked = (picked * real).sum(1)
    return picked


def _gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    """Weights and points of n-point Gauss-Legendre quadrature on [0, 1] (captum's "gausslegendre")."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return list(0.5 * weights), list(0.5 * (1 + nodes))


def _tap_gradients(network: TaskNetwork, x: torch.Tensor, target,
                   position: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
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
    selected = _picked(out, target, x if network.tokens else None, position)
    tapped = [o for o in outputs if o is not None]
    if len(tapped) != len(outputs):
        raise RuntimeError("a module's tap saw no output in the forward pass")
    return list(torch.autograd.grad(selected.sum(), tapped)), tapped


def explain(model, task: int, x: torch.Tensor, method: str = "Integrated Gradients",
            target: torch.Tensor | None = None, n_steps: int = 24,
            position: int | None = None) -> tuple[torch.Tensor, list[float]]:
    """The task's input attributions by `method` (same shape as x) and its block importance: per body
    block, the mean absolute layer conductance of its residual update, i.e. how much of the task's
    output (against an all-zero input) flows through that block.

    Both are integrals along the straight path from the zero input to x. One forward and backward
    over n_steps + 1 Gauss-Legendre points of that path gives every block's conductance (captum's
    LayerConductance computation, which takes one layer per call and would run the same points once
    per block) and the input's gradients there, which weighted and times x are Integrated Gradients
    (captum's, method "gausslegendre", n_steps + 1 points). The other methods are captum's own.

    A token task (ids x [B, L]) gets per-token attributions [B, L] at its embeddings, by the methods
    of TOKEN_METHODS; a tagging task explains every real token's predicted tag, or the one at
    `position`."""
    network = TaskNetwork(model.eval(), task)
    target = _target(network, x, target)
    weights, alphas = _gauss_legendre(n_steps + 1)
    repeated = target if isinstance(target, int) else target.repeat(n_steps + 1, *[1] * (target.dim() - 1))
    if network.tokens:  # the path is taken at the embeddings
        network.path = torch.tensor(alphas).repeat_interleave(len(x))
        scaled = x.repeat(n_steps + 1, 1)
    else:
        scaled = torch.cat([alpha * x for alpha in alphas]).requires_grad_()  # baseline: all zeros
    gradients, outputs = _tap_gradients(network, scaled, repeated, position)
    n = len(x)
    importance = []
    for gradient, output in zip(gradients[1:], outputs[1:]):
        conductance = ((output[n:] - output[:-n]) * gradient[:-n]).reshape(n_steps, n, *output.shape[1:]).sum(0)
        importance.append(conductance.abs().sum(dim=tuple(range(1, conductance.dim()))).mean().item())
    if network.tokens:
        path = (weights, alphas, gradients[0], outputs[0].detach())  # the tokens' tap: their embeddings
        return _token_attributions(network, x, target, method, position, path), importance
    if method == "Integrated Gradients":
        along_path = gradients[0].reshape(n_steps + 1, *x.shape)
        attributions = x * sum(w * g for w, g in zip(weights, along_path))
    else:
        kwargs: dict[str, object] = {"baselines": torch.zeros_like(x)} if method == "DeepLift" else {}
        if method == "Saliency":
            kwargs["abs"] = True
        explainer = CAPTUM_METHODS[method](network)
        attributions = explainer.attribute(x.clone().requires_grad_(True), target=target, **kwargs)
    return attributions.detach(), importance


def _token_attributions(network: TaskNetwork, x: torch.Tensor, target, method: str, position: int | None,
                        path: tuple[list[float], list[float], torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Per-token attributions [B, L]: the embeddings times the path's weighted gradients there
    (Integrated Gradients), or the gradient at the sequence's own embeddings (Saliency: its size;
    Input x Gradient: times the embeddings), each summed over the embedding's dimensions."""
    if method not in TOKEN_METHODS:
        raise ValueError(f"token tasks are attributed by {', '.join(TOKEN_METHODS)}, not {method}")
    weights, alphas, gradients, embedded = path
    n = len(x)
    if method == "Integrated Gradients":
        own = embedded[-n:] / alphas[-1]  # the path's points are alpha * the embeddings
        along_path = gradients.reshape(len(weights), n, *gradients.shape[1:])
        return (own * sum(w * g for w, g in zip(weights, along_path))).sum(-1).detach()
    network.path = None
    (gradient, *_), (own, *_) = _tap_gradients(network, x, target, position)
    return (gradient.abs() if method == "Saliency" else own * gradient).sum(-1).detach()
