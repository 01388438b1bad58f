import pytest
import torch

from helpers import random_masks, tiny_config
from lsmn_core.data.loading import load_tasks
from lsmn_core.schemes import build_model


@pytest.fixture(scope="module")
def specs():
    config = tiny_config()
    return [d.spec for d in load_tasks(config.tasks, config.data)]


def model_for(specs, kind):
    options = {"kind": kind} if kind != "sparse" else {"kind": "sparse"}
    return build_model(specs, tiny_config(scheme=options)).eval()


@pytest.mark.parametrize("kind", ["independent", "hard", "sparse"])
def test_all_tasks_in_one_batched_pass_equal_one_task_at_a_time(specs, kind):
    model = model_for(specs, kind)
    if kind == "sparse":
        random_masks(model)
    x = torch.rand(7, 8, 8)
    together = model.forward_tasks(x)
    for t, out in enumerate(together):
        assert torch.allclose(out, model(x, t), atol=1e-5)
    per_task_input = torch.rand(3, 5, 8, 8)
    stacked = model.forward_tasks(per_task_input)
    for t in range(3):
        assert torch.allclose(stacked[t], model(per_task_input[t], t), atol=1e-5)


def test_pruned_weights_are_out_of_a_tasks_function(specs):
    model = model_for(specs, "sparse")
    random_masks(model, keep=0.3)
    x = torch.rand(6, 8, 8)
    before = model.forward_tasks(x)
    task = 1
    with torch.no_grad():
        for name, p in model.body.named_parameters():
            if model.body.prunable(name):
                pruned = ~model.body.mask_of(name)[task]
                p[pruned] += 5.0 * torch.randn(int(pruned.sum()))
    after = model.forward_tasks(x)
    assert torch.equal(before[task], after[task])  # bit-identical: pruned weights never enter
    assert not torch.allclose(before[0], after[0])  # the same weights do matter to other tasks


def test_independent_tasks_do_not_touch_each_other(specs):
    model = model_for(specs, "independent")
    x = torch.rand(4, 8, 8)
    before = model(x, 0)
    with torch.no_grad():
        for p in model.body.parameters():
            p[1:] += 1.0
        for p in model.encoders["task_parity"].parameters():
            p += 1.0
    assert torch.equal(model(x, 0), before)


def test_parameter_counts_follow_the_scheme(specs):
    hard, independent = model_for(specs, "hard"), model_for(specs, "independent")
    body = sum(p.numel() for p in hard.body.parameters())
    assert sum(p.numel() for p in independent.body.parameters()) == 3 * body
    assert independent.parameter_counts()["shared"] == 0
    hard_counts = hard.parameter_counts()
    encoder = sum(p.numel() for p in hard.encoders.parameters())
    assert hard_counts["shared"] == body + encoder  # one encoder and one body serve all three tasks
    sparse = model_for(specs, "sparse")
    random_masks(sparse, keep=0.5)
    counts = sparse.parameter_counts()
    for t, name in enumerate(sparse.task_names):
        pruned = sum(int((~m[t]).sum()) for m in sparse.body.masks().values())
        assert counts["active"][name] == hard_counts["active"][name] - pruned


@pytest.mark.parametrize("float_masks, keep_masked", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("kind", ["sparse", "mann"])
def test_task_by_task_masked_linears_equal_the_stacked_masked_weights(specs, kind, float_masks, keep_masked,
                                                                       monkeypatch):
    """The CPU path (MaskedLinear: masks as floats or, past the size limit, viewed as uint8; the
    masked weights kept for the backward or, past their limit, recomputed there) computes what the
    batched GPU path computes: the block's update and the gradients of input, shared weights, norms
    and biases; also after the masks change (the float copy follows them)."""
    from lsmn_core.schemes.base import IsometricScheme

    if not float_masks:
        monkeypatch.setattr("lsmn_core.schemes.masked.FLOAT_MASKS_LIMIT", 0)
    if not keep_masked:
        monkeypatch.setattr("lsmn_core.network.masked_linear.KEEP_MASKED_LIMIT", 0)

    model = model_for(specs, kind)
    body = model.body
    tasks = torch.tensor([2, 0, 2])  # repeated and out of order
    h = torch.randn(3, 5, body.width, requires_grad=True)
    for seed in (0, 1):
        random_masks(model, seed)
        results = []
        for update in (body.layer_update, lambda *a: IsometricScheme.layer_update(body, *a)):
            body.zero_grad()
            h.grad = None
            out = update(h, tasks, 1)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            results.append([out.detach(), h.grad.clone()] + [p.grad.clone() for p in body.blocks[1].values()])
        for looped, stacked in zip(*results):
            assert torch.allclose(looped, stacked, atol=1e-5)
