"""TSV-M, Iso-C and Iso-CTS against their definitions, written again here in NumPy: per 2-D weight
from singular value decompositions, every other tensor the mean of the task vectors."""

import numpy as np
import pytest
import torch

from lsmn_core.errors import ConfigError
from lsmn_core.merges import MERGES
from lsmn_core.merges.iso import COMMON
from test_merges import merge


def polar(a: np.ndarray) -> np.ndarray:
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
    return polar(u) @ np.diag(s) @ polar(vt)


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
    return s.mean() * polar(np.concatenate(us, 1)) @ polar(np.concatenate(vts, 0))


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


def test_the_matrix_merges_are_registered_with_the_authors_scale():
    assert {"tsv_m", "iso_c", "iso_cts"} <= set(MERGES.names())
    assert all(MERGES.get(m).default_lambda == 1.0 for m in DEFINITIONS)

