"""Attributions from one pass along the path: every block's layer conductance and Integrated
Gradients, each equal to captum's own (one layer per call, and IntegratedGradients)."""

import pytest
import torch
from captum.attr import IntegratedGradients, LayerConductance, Saliency

from analysis.attributions import TaskNetwork, explain
from helpers import TINY, tiny_config
from lsmn_core.data import load_tasks
from lsmn_core.schemes import build_model

KANG_REGRESSION = {"name": "kang0", "dataset": "kang_synthetic", "target": "0", "domain": "clean"}


@pytest.mark.parametrize("scheme", [{"kind": "sparse"}, {"kind": "mixture", "templates": 3}, {"kind": "hyper"}])
def test_one_pass_gives_captums_layer_conductance_of_each_block_and_integrated_gradients(scheme):
    """Body blocks (isometric schemes) or a task's own layers (hyper); classes and a regression."""
    config = tiny_config(scheme=scheme, tasks=[*TINY["tasks"][:2], KANG_REGRESSION])
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config).eval()
    for task in range(len(data)):
        x = torch.as_tensor(data[task].splits["dev"][0][:3])
        network = TaskNetwork(model, task)
        target = 0 if data[task].spec.kind == "regression" else network(x).argmax(-1)
        zero = torch.zeros_like(x)
        expected = []
        for tap in network.taps:  # captum, one block per call
            conductance = LayerConductance(network, tap).attribute(x, baselines=zero, target=target, n_steps=24)
            expected.append(conductance.abs().sum(dim=tuple(range(1, conductance.dim()))).mean().item())
        attributions, importance = explain(model, task, x)
        assert importance == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert max(expected) > 0
        integrated = IntegratedGradients(network).attribute(x, baselines=zero, target=target, n_steps=25,
                                                            method="gausslegendre")
        assert torch.allclose(attributions, integrated, rtol=1e-4, atol=1e-6) and integrated.abs().max() > 0
        saliency, same_importance = explain(model, task, x, "Saliency")
        assert torch.equal(saliency, Saliency(network).attribute(x, target=target, abs=True))
        assert same_importance == importance
