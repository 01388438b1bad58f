"""Block importance: captum's layer conductance of every block, computed in one pass."""

import pytest
import torch
from captum.attr import LayerConductance

from analysis.attributions import TaskNetwork, block_importance
from conftest import tiny_config
from lsmn_core.data import load_tasks
from lsmn_core.model import build_model


@pytest.mark.parametrize("scheme", [{"kind": "sparse"}, {"kind": "mixture", "templates": 3}])
def test_block_importance_is_captums_layer_conductance_of_each_block(scheme):
    config = tiny_config(scheme=scheme)
    data = load_tasks(config.tasks, config.data)
    model = build_model([d.spec for d in data], config).eval()
    for task in range(len(data)):
        x = torch.as_tensor(data[task].splits["dev"][0][:3])
        network = TaskNetwork(model, task)
        target = network(x).argmax(-1)
        expected = []
        for tap in network.taps:  # captum, one block per call
            conductance = LayerConductance(network, tap).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                                   n_steps=24)
            expected.append(conductance.abs().sum(dim=tuple(range(1, conductance.dim()))).mean().item())
        assert block_importance(model, task, x) == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert max(expected) > 0
