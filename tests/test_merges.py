"""The merge methods against their definitions and against peft's merge utilities (where peft computes
the same thing): task arithmetic, TIES, DARE (with a sum or TIES), TALL masks and consensus; and a
tensor merged in chunks of rows equals it merged whole."""

import pytest
import torch
from peft.utils import merge_utils

from lsmn_core.errors import ConfigError
from lsmn_core.merges import MERGES
from lsmn_core.merges.combine import CHUNK, chunk_generator, merge_tensor, row_chunks, weighted
from lsmn_core.merges.method import Recipe


def merge(method: str, deltas: torch.Tensor, name: str = "w", **settings) -> torch.Tensor:
    """The merged delta [1 or T, ...] of `deltas` [T, ...] by the registered method, as the Studio
    computes it (chunk by chunk), with every coefficient 1."""
    merger = MERGES.get(method)()
    recipe = Recipe(method, settings.pop("lam", merger.default_lambda), **settings)
    pieces = [weighted(parts, masks, torch.ones(len(deltas)), recipe.lam, merger.own_parts)
              for _, parts, masks in merge_tensor(merger, recipe, name, tuple(deltas.shape[1:]), deltas.__getitem__,
                                                  lambda rows: deltas[:, rows], len(deltas))]
    return torch.cat(pieces, 1)


@pytest.fixture
def deltas() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 48, 40) * torch.rand(4, 1, 40)  # four tasks' vectors of one 48 x 40 weight


def test_task_arithmetic_is_lambda_times_the_sum(deltas):
    merged = merge("task_arithmetic", deltas, lam=0.3)[0]
    assert torch.allclose(merged, 0.3 * merge_utils.task_arithmetic(list(deltas), torch.ones(4)), atol=1e-6)


@pytest.mark.parametrize("density", [0.1, 0.2, 0.5, 1.0])
def test_ties_is_peft_s_ties_and_its_definition(deltas, density):
    merged = merge("ties", deltas, lam=1.0, density=density)[0]
    assert torch.allclose(merged, merge_utils.ties(list(deltas), torch.ones(4), density), atol=1e-6)
    # the definition, written out: trim each vector to its k largest, elect the sign of the sum, mean of the agreeing
    k = int(density * deltas[0].numel())
    trimmed = torch.stack([d * (d.abs() >= d.abs().flatten().topk(k).values.min()) for d in deltas])
    sign = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    mean = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    assert torch.allclose(merged, mean, atol=1e-6)


def test_dare_drops_with_probability_one_minus_density_and_rescales(deltas):
    merged = merge("dare", deltas, lam=1.0, density=0.3, seed=5)[0]
    keep = torch.rand(deltas.shape, generator=chunk_generator(Recipe("dare", 1.0, seed=5), "w", 0)) < 0.3
    assert torch.allclose(merged, (deltas * keep / 0.3).sum(0), atol=1e-5)
    assert abs(keep.float().mean().item() - 0.3) < 0.02
    again, other = merge("dare", deltas, density=0.3, seed=5), merge("dare", deltas, density=0.3, seed=6)
    assert torch.equal(again, merge("dare", deltas, density=0.3, seed=5)) and not torch.equal(again, other)
    dare_ties = merge("dare_ties", deltas, lam=1.0, density=0.3, seed=5)[0]
    dropped = deltas * keep / 0.3
    expected = merge_utils.disjoint_merge(dropped, merge_utils.calculate_majority_sign_mask(dropped, "total"))
    assert torch.allclose(dare_ties, expected, atol=1e-5)


def test_tall_masks_keep_where_a_task_outweighs_the_others(deltas):
    lambdas = [0.2, 0.4, 0.6, 1.0]
    per_task = merge("tall", deltas, lam=0.3, tall_lambdas=lambdas)
    total = deltas.sum(0)
    for t, lam_t in enumerate(lambdas):
        mask = deltas[t].abs() >= lam_t * (total - deltas[t]).abs()
        assert torch.allclose(per_task[t], 0.3 * total * mask, atol=1e-6)
    consensus = merge("consensus", deltas, lam=0.3, tall_lambdas=lambdas, consensus_k=2)[0]
    masks = torch.stack([deltas[t].abs() >= lam * (total - deltas[t]).abs() for t, lam in enumerate(lambdas)])
    assert torch.allclose(consensus, 0.3 * total * (masks.sum(0) >= 2), atol=1e-6)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "tall"])
def test_a_tensor_merged_in_chunks_of_rows_equals_it_merged_whole(method):
    torch.manual_seed(1)
    big = torch.randn(3, 2 * CHUNK // 256 + 7, 256)  # three chunks of rows
    assert len(row_chunks(big.shape[1:])) == 3
    chunked = merge(method, big)
    merger = MERGES.get(method)()
    recipe = Recipe(method, merger.default_lambda)
    levels = [merger.level(big[t], recipe) for t in range(3)]
    whole = weighted(merger.parts(big, levels, recipe, None), merger.masks(big, recipe), torch.ones(3), recipe.lam)
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_coefficients_weigh_each_task_s_part(deltas):
    merger = MERGES.get("task_arithmetic")()
    recipe = Recipe("task_arithmetic", 0.5)
    parts = merger.parts(deltas, [None] * 4, recipe, None)
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5])
    assert torch.allclose(weighted(parts, None, weights, 0.5)[0],
                          0.5 * (deltas[0] + 2 * deltas[2] + 0.5 * deltas[3]), atol=1e-6)


@pytest.mark.parametrize("settings, message", [
    ({"density": 0.0}, "density must be in (0, 1]"), ({"density": 1.5}, "density must be in (0, 1]"),
    ({"lam": float("nan")}, "lambda must be a finite number"), ({"seed": -1}, "seed must be a whole number"),
    ({"coefficients": [[1.0, 2.0]]}, "coefficients must be a table of 4 tasks x 3 layers"),
    ({"coefficients": [[float("inf")] * 3] * 4}, "not finite"), ({"tall_lambdas": [0.4]}, "tall_lambdas must be 4")])
def test_a_recipe_no_merge_can_use_is_refused_naming_the_setting(settings, message):
    lam = settings.pop("lam", 1.0)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Recipe("ties", lam, **settings).check(4, 3)


@pytest.mark.parametrize("density", [0.001, 0.1, 0.2, 0.5, 0.9, 0.99999])
def test_a_large_tensor_s_level_is_the_exact_k_th_largest_magnitude(density):
    """Past 8 x SAMPLE entries the level is bracketed from a sample first, and the brackets counted a
    block at a time: still exactly the k-th largest magnitude, with half the entries tied at zero and
    at a density the brackets miss."""
    from lsmn_core.merges.ties import BLOCK, SAMPLE, magnitude_level

    generator = torch.Generator().manual_seed(3)
    delta = torch.randn(max(8 * SAMPLE, 2 * BLOCK) + 12_345, generator=generator)
    delta[torch.rand(delta.shape, generator=generator) < 0.5] = 0
    k = int(density * delta.numel())
    assert magnitude_level(delta, density) == float(delta.abs().kthvalue(delta.numel() - k + 1).values)
    assert (delta.abs() >= magnitude_level(delta, density)).sum() >= k
