"""Attributions from one pass along the path: every block's layer conductance and Integrated
Gradients, each equal to captum's own (one layer per call, and IntegratedGradients)."""

import pytest
import torch
from captum.attr import IntegratedGradients, LayerConductance, Saliency

from analysis.attributions import TaskNetwork, explain
from helpers import TINY, tiny_config
from lsmn_core.data.loading import load_tasks
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


@pytest.mark.parametrize("block", ["attention", "lstm"])
def test_token_tasks_are_attributed_at_their_embeddings_and_integrated_gradients_add_up(block, monkeypatch):
    """Completeness: a token's Integrated Gradients sum to the output at the sequence's embeddings less
    the output at zero embeddings; padding gets none; a tagging task explains every real token's tag
    or one position's."""
    from helpers import REPO

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    from toy_tokens import sequences

    tasks = [{"name": "has3", "source": "toy_tokens:sequences", "tokens": True},
             {"name": "even", "source": "toy_tokens:sequences", "tokens": True, "args": {"tagging": True}}]
    config = tiny_config(tasks=tasks, scheme={"kind": "hard"}, model={"block": block, "width": 16, "depth": 2})
    model = build_model([d.spec for d in load_tasks(config.tasks, config.data)], config).eval()
    x = torch.as_tensor(sequences()[0][:3])
    for task, position in ((0, None), (1, None), (1, 2)):
        network = TaskNetwork(model, task)
        with torch.no_grad():
            target = network(x).argmax(-1)
            picked = {}
            for point in (1.0, 0.0):
                network.path = torch.full((len(x),), point)
                out = network(x)
                picked[point] = (out.gather(-1, target[..., None])[..., 0] if out.dim() == 3 else
                                 out.gather(1, target[:, None])[:, 0])
        if picked[1.0].dim() == 2:  # tagging: the real tokens' tags, or one position's
            real = (x != 0) & ((torch.arange(x.shape[1]) == position) if position is not None else True)
            picked = {k: (v * real).sum(1) for k, v in picked.items()}
        attributions, importance = explain(model, task, x, position=position, n_steps=100)  # a sharp path near 0
        assert attributions.shape == x.shape and len(importance) == 2
        assert torch.allclose(attributions.sum(1), picked[1.0] - picked[0.0], rtol=1e-3, atol=1e-4)
        assert (attributions[x == 0] == 0).all() and attributions.abs().max() > 0
        for method in ("Saliency", "Input x Gradient"):
            other, _ = explain(model, task, x, method, position=position)
            assert other.shape == x.shape and other.abs().max() > 0
    with pytest.raises(ValueError, match="token tasks are attributed by"):
        explain(model, 0, x, "DeepLift")
