"""TSV-M, Iso-C, Iso-CTS and TSV-C against their definitions, written again here in NumPy: per 2-D
weight from singular value decompositions, every other tensor the mean of the task vectors (TSV-C:
each task's own)."""

import numpy as np
import pytest
import torch

from lsmn_core.errors import ConfigError
from lsmn_core.merges import MERGES
from lsmn_core.merges.matrix import polar, top_triplets
from lsmn_core.merges.method import COMMON, Recipe
from lsmn_core.merges.tsv_compress import rebuilt
from test_merges import merge


def polar_numpy(a: np.ndarray) -> np.ndarray:
    p, _, qt = np.linalg.svd(a, full_matrices=False)
    return p @ qt


def tsv_m(deltas: np.ndarray) -> np.ndarray:
    tasks, m, n = deltas.shape
    r = min(m, n)
    k = r // tasks
    u, s, vt = np.zeros((m, r)), np.zeros(r), np.zeros((r, n))
    for t, d in enumerate(deltas):
        p, sigma, qt = np.linalg.svd(d, full_matrices=False)
        u[:, t * k:(t + 1) * k], s[t * k:(t + 1) * k], vt[t * k:(t + 1) * k] = p[:, :k], sigma[:k], qt[:k]
    return polar_numpy(u) @ np.diag(s) @ polar_numpy(vt)


def iso_c(deltas: np.ndarray) -> np.ndarray:
    p, sigma, qt = np.linalg.svd(deltas.sum(0), full_matrices=False)
    return sigma.mean() * p @ qt


def iso_cts(deltas: np.ndarray, common: float = COMMON) -> np.ndarray:
    tasks, m, n = deltas.shape
    r = min(m, n)
    shared = r - round((r - int(r * common)) / tasks) * tasks
    k = (r - shared) // tasks
    p, sigma, qt = np.linalg.svd(deltas.sum(0), full_matrices=False)
    us, ss, vts = [p[:, :shared]], [sigma[:shared]], [qt[:shared]]
    for d in deltas:
        left = d - p[:, :shared] @ p[:, :shared].T @ d
        pt, st, qtt = np.linalg.svd(left, full_matrices=False)
        us.append(pt[:, :k])
        ss.append(st[:k])
        vts.append(qtt[:k])
    s = np.concatenate(ss)
    assert len(s) == r
    return s.mean() * polar_numpy(np.concatenate(us, 1)) @ polar_numpy(np.concatenate(vts, 0))


DEFINITIONS = {"tsv_m": tsv_m, "iso_c": iso_c, "iso_cts": iso_cts}


@pytest.fixture
def deltas() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 48, 40) * torch.rand(4, 1, 40)  # four tasks' vectors of one 48 x 40 weight


@pytest.mark.parametrize("method", list(DEFINITIONS))
@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_a_weight_matrix_merges_as_its_definition_says(deltas, method, lam):
    merged = merge(method, deltas, lam=lam)[0]
    expected = lam * DEFINITIONS[method](deltas.double().numpy())
    assert np.allclose(merged.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("common", [0.5, 0.9])
def test_iso_cts_takes_the_recipe_s_share_of_common_directions(deltas, common):
    merged = merge("iso_cts", deltas, lam=1.0, common=common)[0]
    assert np.allclose(merged.numpy(), iso_cts(deltas.double().numpy(), common), atol=1e-4)  # SVDs in float32
    assert not np.allclose(merged.numpy(), iso_cts(deltas.double().numpy()), atol=1e-3)  # not the default's


def test_tsv_m_keeps_each_task_s_singular_values_and_makes_its_directions_orthonormal(deltas):
    merged = merge("tsv_m", deltas, lam=1.0)[0].double().numpy()
    kept = np.sort(np.concatenate([np.linalg.svd(d, compute_uv=False)[:10] for d in deltas.double().numpy()]))[::-1]
    assert np.allclose(np.linalg.svd(merged, compute_uv=False)[:40], kept, atol=1e-5)  # U, V orthonormal: s as is


def test_the_isotropic_merges_have_one_singular_value(deltas):
    for method in ("iso_c", "iso_cts"):
        values = np.linalg.svd(merge(method, deltas, lam=1.0)[0].double().numpy(), compute_uv=False)
        assert values.max() - values.min() < 1e-4 * values.max(), method
    sum_values = np.linalg.svd(deltas.sum(0).double().numpy(), compute_uv=False)
    assert np.linalg.svd(merge("iso_c", deltas, lam=1.0)[0].double().numpy(), compute_uv=False)[0] == \
        pytest.approx(sum_values.mean(), rel=1e-5)


@pytest.mark.parametrize("method", list(DEFINITIONS))
@pytest.mark.parametrize("name, shape", [("encoder.layer.0.output.dense.bias", (40,)),
                                         ("blocks.0.conv1.weight", (8, 4, 3, 3)),
                                         ("embeddings.word_embeddings.weight", (50, 16)), ("lm_head.weight", (50, 16))])
def test_every_other_tensor_takes_the_mean_of_the_task_vectors(method, name, shape):
    torch.manual_seed(1)
    vectors = torch.randn(3, *shape)
    assert torch.allclose(merge(method, vectors, name=name, lam=1.0)[0], vectors.mean(0), atol=1e-6)


@pytest.mark.parametrize("method", list(DEFINITIONS))
def test_half_precision_vectors_are_merged_in_float32_or_wider(method, deltas):
    merged = merge(method, deltas.half().float(), lam=1.0)[0]
    assert np.allclose(merged.numpy(), DEFINITIONS[method](deltas.half().double().numpy()), atol=1e-4)


@pytest.mark.parametrize("method", ["tsv_m", "iso_cts"])
def test_more_tasks_than_a_weight_s_smaller_side_is_refused_naming_it(method):
    vectors = torch.randn(5, 4, 3)
    with pytest.raises(ConfigError, match=r"attn\.q\.weight: 5 tasks but its smaller side is 3"):
        merge(method, vectors, name="attn.q.weight")


def tsv_c(deltas: np.ndarray, k: int) -> np.ndarray:
    """Each task's delta from its own top k singular triplets."""
    out = []
    for d in deltas:
        p, sigma, qt = np.linalg.svd(d, full_matrices=False)
        out.append(p[:, :k] @ np.diag(sigma[:k]) @ qt[:k])
    return np.stack(out)


@pytest.mark.parametrize("keep, k", [(None, 40 // 4), (0.25, int(0.25 * 48 * 40) // (48 + 40 + 1)), (0.001, 1),
                                     (1.0, 48 * 40 // (48 + 40 + 1))])
def test_tsv_c_gives_each_task_its_own_top_triplets(deltas, keep, k):
    """floor(r / T) triplets by default; with keep, as many as fit that share of the weight's numbers
    (at least one); each task evaluated with its own, scaled by lambda."""
    compressed = merge("tsv_c", deltas, lam=0.9, keep=keep)
    assert compressed.shape == deltas.shape
    assert np.allclose(compressed.numpy(), 0.9 * tsv_c(deltas.double().numpy(), k), atol=5e-5)  # SVDs in float32


def test_tsv_c_s_parts_are_rebuilt_exactly_from_the_numbers_it_stores(deltas):
    method, recipe = MERGES.get("tsv_c")(), Recipe("tsv_c", 1.0)
    stored = method.stored("w", deltas, recipe)
    shapes = [tuple(t["u"].shape) + tuple(t["s"].shape) + tuple(t["vt"].shape) for t in stored]
    assert shapes == [(48, 10, 10, 10, 40)] * 4
    assert all(v.dtype == torch.float32 for t in stored for v in t.values())
    assert torch.equal(merge("tsv_c", deltas, lam=1.0), torch.stack([rebuilt(t) for t in stored]))


@pytest.mark.parametrize("name, shape", [("encoder.layer.0.output.dense.bias", (40,)), ("blocks.0.conv1.weight",
                                                                                        (8, 4, 3, 3))])
def test_tsv_c_keeps_each_task_s_own_delta_of_every_other_tensor(name, shape):
    torch.manual_seed(1)
    vectors = torch.randn(3, *shape)
    assert torch.equal(merge("tsv_c", vectors, name=name, lam=1.0), vectors)
    assert [t.keys() for t in MERGES.get("tsv_c")().stored(name, vectors, Recipe("tsv_c", 1.0))] == [{"delta"}] * 3


def test_the_matrix_merges_are_registered_with_the_authors_scale():
    assert {"tsv_m", "iso_c", "iso_cts", "tsv_c"} <= set(MERGES.names())
    assert MERGES.get("tsv_c").per_task and MERGES.get("tsv_c").default_lambda == 1.0
    assert all(MERGES.get(m).default_lambda == 1.0 for m in DEFINITIONS)



def singular_interference_numpy(deltas: np.ndarray, chosen: list[int]) -> float:
    tasks, m, n = deltas.shape
    k = min(m, n) // tasks
    us, ss, vs = [], [], []
    for t in chosen:
        p, sigma, qt = np.linalg.svd(deltas[t], full_matrices=False)
        us.append(p[:, :k])
        ss.append(sigma[:k])
        vs.append(qt[:k].T)
    u, s, v = np.concatenate(us, 1), np.concatenate(ss), np.concatenate(vs, 1)
    eye = np.eye(u.shape[1])
    return float(np.abs((u.T @ u - eye) @ np.diag(s) @ (v.T @ v - eye)).sum())


def test_the_singular_task_interference_of_a_weight_and_of_each_pair_is_its_definition(deltas):
    from lsmn_core.schemes.vectors.statistics import singular_interference

    total, pairwise, energy = singular_interference(deltas)
    array = deltas.double().numpy()
    assert total == pytest.approx(singular_interference_numpy(array, [0, 1, 2, 3]), rel=1e-9)
    for a in range(4):
        for b in range(4):
            expected = 0.0 if a == b else singular_interference_numpy(array, [a, b])
            assert pairwise[a, b].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    for t in range(4):
        sigma = np.linalg.svd(array[t], compute_uv=False)
        assert energy[t].item() == pytest.approx((sigma[:10] ** 2).sum() / (sigma ** 2).sum())


def test_tasks_in_orthogonal_subspaces_do_not_interfere_and_tsv_m_keeps_them_exactly():
    """Each task's vector of rank floor(r / T) = 4 in its own block of directions: no interference, all of
    its energy in its top 4 singular values, and TSV-M's merge is their sum."""
    from lsmn_core.schemes.vectors.statistics import singular_interference

    torch.manual_seed(2)
    left, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    deltas = torch.stack([left[:, 4 * t:4 * t + 4] @ torch.diag(torch.rand(4, dtype=torch.float64) + 0.5)
                          @ right[:, 4 * t:4 * t + 4].T for t in range(4)])
    total, pairwise, energy = singular_interference(deltas)
    assert total < 1e-9 and pairwise.abs().max() < 1e-9 and torch.allclose(energy, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(merge("tsv_m", deltas.float(), lam=1.0)[0].double(), deltas.sum(0), atol=1e-5)


def test_an_excluded_weight_matrix_takes_the_mean(deltas):
    merged = merge("tsv_m", deltas, name="encoder.layer.3.attention.self.query.weight", lam=1.0,
                   exclude=["*.layer.3.*"])[0]
    assert torch.allclose(merged, deltas.mean(0), atol=1e-6)
    kept = merge("tsv_m", deltas, name="encoder.layer.2.attention.self.query.weight", lam=1.0, exclude=["*.layer.3.*"])
    assert np.allclose(kept[0].numpy(), tsv_m(deltas.double().numpy()), atol=1e-5)


def spectrum(shape: tuple[int, ...], decay: float, seed: int = 0) -> torch.Tensor:
    """Random matrices of `shape` whose singular values fall from 1 to `decay` (a fine-tune's spread)."""
    generator = torch.Generator().manual_seed(seed)
    u, _, vt = torch.linalg.svd(torch.randn(shape, generator=generator, dtype=torch.float64), full_matrices=False)
    return ((u * torch.logspace(0, np.log10(decay), u.shape[-1], dtype=torch.float64).unsqueeze(-2)) @ vt).float()


@pytest.mark.parametrize("shape, k", [((3, 60, 80), 12), ((3, 80, 60), 12), ((60, 80), 30), ((60, 80), 31)])
def test_the_top_triplets_are_the_svd_s_to_float32_precision(shape, k):
    delta = spectrum(shape, 1e-2)  # the Gram route for k up to half of r, a full SVD past it
    u, s, vt = top_triplets(delta, k)
    p, sigma, qt = np.linalg.svd(delta.double().numpy(), full_matrices=False)
    assert np.allclose(s.numpy(), sigma[..., :k], atol=1e-5)
    rebuilt, expected = (u * s.unsqueeze(-2)) @ vt, (p[..., :k] * sigma[..., None, :k]) @ qt[..., :k, :]
    assert np.allclose(rebuilt.double().numpy(), expected, atol=1e-5)
    eye = np.eye(k)
    assert np.allclose(u.mT.double().numpy() @ u.double().numpy(), eye, atol=1e-5)
    assert np.allclose(vt.double().numpy() @ vt.mT.double().numpy(), eye, atol=1e-5)


def test_top_triplets_of_a_matrix_of_lower_rank_or_of_zeros_are_finite_and_exact():
    low = spectrum((40, 3), 0.5) @ spectrum((3, 50), 0.5, seed=1)  # rank 3, k 10: past the Gram route's floor
    u, s, vt = top_triplets(low, 10)
    assert np.allclose(((u * s) @ vt).numpy(), low.numpy(), atol=1e-5)
    assert s[3:].abs().max() < 1e-5
    assert torch.allclose(vt @ vt.T, torch.eye(10), atol=1e-4) and torch.allclose(u.T @ u, torch.eye(10), atol=1e-4)
    u, s, vt = top_triplets(torch.zeros(40, 50), 10)
    assert torch.isfinite(u).all() and torch.isfinite(vt).all() and not s.any()


@pytest.mark.parametrize("shape", [(80, 30), (30, 80), (30, 30)])
def test_the_polar_factor_is_the_svd_s(shape):
    matrix = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    assert np.allclose(polar(matrix).double().numpy(), polar_numpy(matrix.double().numpy()), atol=1e-5)


def test_the_polar_factor_leaves_out_directions_of_no_length():
    """Zero columns (TSV-M's slots past T x k) stay zero; the others are the polar factor of the rest."""
    columns = torch.randn(50, 12, generator=torch.Generator().manual_seed(3))
    factor = polar(torch.cat([columns, torch.zeros(50, 4)], 1))
    assert not factor[:, 12:].any()
    assert np.allclose(factor[:, :12].double().numpy(), polar_numpy(columns.double().numpy()), atol=1e-5)
