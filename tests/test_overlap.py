import numpy as np
import pytest

from analysis.bitcount import device_intersections, packed_intersections, tile_intersections, unpacked_intersections
from analysis.overlap import intersections, overlap_report, pairwise_overlap

W = "body.blocks.0.w"  # one parameter's masks, named as a body parameter is
A = np.array([[1, 1, 1, 0, 0, 0],
              [1, 1, 0, 1, 0, 0],
              [1, 0, 0, 0, 0, 1]], dtype=bool)


def _subsets(masks: np.ndarray, names: list[str]) -> dict:
    return {tuple(s["tasks"]): s["count"] for s in overlap_report({W: masks}, names, top=None)["subsets"]}


def test_overlap_ratio_is_intersection_over_union():
    assert overlap_report({W: A}, list("abc"))["global"] == 1 / 5  # weight 0 used by all; 5 used by someone
    assert overlap_report({W: A[:2]}, list("ab"))["global"] == 2 / 4
    assert overlap_report({W: np.zeros((2, 3), bool)}, list("ab"))["global"] == 1.0


def test_pairwise_matrix_matches_the_definition():
    pairwise = pairwise_overlap(intersections({W: A}))
    for i in range(3):
        for j in range(3):
            inter = (A[i] & A[j]).sum()
            union = (A[i] | A[j]).sum()
            assert np.isclose(pairwise[i, j], inter / union)
    assert intersections({W: A}).tolist() == [[3, 2, 1], [2, 3, 1], [1, 1, 2]]


def test_exact_subsets_partition_the_weights():
    as_dict = _subsets(A, ["a", "b", "c"])
    assert as_dict == {("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1, (): 1}
    assert sum(as_dict.values()) == A.shape[1]


def test_many_tasks_subsets_still_exact():
    rng = np.random.RandomState(0)
    masks = rng.rand(20, 500) < 0.5
    masks[:, :100] = True  # 100 weights shared by all 20 tasks
    names = [f"t{i}" for i in range(20)]
    subsets = _subsets(masks, names)
    assert sum(subsets.values()) == 500
    assert subsets[tuple(names)] == 100 and max(subsets.values()) == 100
    brute = {}
    for column in masks.T:
        key = tuple(n for n, used in zip(names, column) if used)
        brute[key] = brute.get(key, 0) + 1
    assert subsets == brute


def test_subsets_are_exact_when_task_sets_share_a_hash(monkeypatch):
    """A collision of the 64-bit digests (forced here by a digest that maps everything to 0) must
    not merge different task sets: the grouping is checked and falls back to whole rows."""
    import analysis.overlap as overlap

    monkeypatch.setattr(overlap, "_mix", lambda x: x * np.uint64(0))
    monkeypatch.setattr(overlap, "CODED_TASKS", 0)  # three tasks would be counted as numbers, unhashed
    assert _subsets(A, ["a", "b", "c"]) == {("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1,
                                            (): 1}


def test_report_per_layer_from_named_masks():
    masks = {"body.blocks.0.w_in": A[:, :4].reshape(3, 2, 2), "body.blocks.1.w_out": A[:, 4:]}
    report = overlap_report(masks, ["a", "b", "c"])
    assert report["global"] == 1 / 5
    assert [layer["layer"] for layer in report["per_layer"]] == [0, 1]
    assert report["per_layer"][0]["global"] == 1 / 4  # of the first 4 weights: weight 0 by all, 4 by someone
    assert report["per_layer"][1]["density"] == [0.0, 0.0, 0.5]
    assert report["density"] == {"a": 0.5, "b": 0.5, "c": 2 / 6}
    assert report["intersections"] == intersections({W: A}).tolist()


def test_cluster_order_groups_overlapping_tasks():
    from analysis.overlap import cluster_order

    rng = np.random.RandomState(1)
    base_a, base_b = rng.rand(400) < 0.5, rng.rand(400) < 0.5
    masks = np.stack([base_a ^ (rng.rand(400) < 0.05) if i % 2 == 0 else base_b ^ (rng.rand(400) < 0.05)
                      for i in range(6)])  # tasks 0, 2, 4 resemble each other, as do 1, 3, 5
    order = cluster_order(pairwise_overlap(intersections({W: masks})))
    assert sorted(order) == list(range(6))
    groups = [set(order[:3]), set(order[3:])]
    assert {0, 2, 4} in groups and {1, 3, 5} in groups


def test_weight_task_sets_label_each_weight():
    from analysis.overlap import weight_task_sets

    mask = np.array([[[1, 1, 0], [0, 0, 1]], [[1, 0, 0], [1, 0, 1]]], dtype=bool)  # 2 tasks, 2x3 weights
    category, labels = weight_task_sets(mask, ["a", "b"])
    assert category.shape == (2, 3)
    assert labels[category[0, 0]] == "a + b" and labels[category[0, 1]] == "a"
    assert labels[category[1, 0]] == "b" and category[0, 2] == 0 and labels[0] == "no task"


@pytest.mark.parametrize("n_tasks, n_weights", [(1, 1), (3, 7), (4, 64), (6, 130), (13, 9001), (9, 70_000),
                                                (5, 900_001)])  # the last past SMALL_BITS: the tiles
def test_popcount_over_packed_masks_counts_every_pair_exactly(n_tasks, n_weights):
    """Task counts that fill part of a 4 x 4 tile, widths that end inside a byte, a word and a chunk,
    by each way of counting: numba's popcount tiles, the small masks' unpacked product, and the
    device path (int8 products of bits unpacked slice by slice; run here on the CPU)."""
    flat = np.random.default_rng(n_weights).random((n_tasks, n_weights)) < 0.3
    brute = [[int((flat[i] & flat[j]).sum()) for j in range(n_tasks)] for i in range(n_tasks)]
    packed = np.packbits(flat, axis=1)
    assert packed_intersections(packed).tolist() == brute
    assert unpacked_intersections(packed).tolist() == brute
    assert tile_intersections(packed).tolist() == brute
    assert device_intersections(packed, "cpu", chunk_bytes=1000).tolist() == brute


@pytest.mark.parametrize("tasks", [1, 5, 8, 9, 16])
def test_few_tasks_sets_are_counted_as_numbers_exactly_as_rows(tasks):
    """Up to 16 tasks a weight's task set is counted as a number (bincount); the same sets, counts and
    per-weight sets as the hashed rows give."""
    from analysis.overlap import _coded_task_sets, _distinct_rows

    generator = np.random.default_rng(tasks)
    rows = [generator.random((tasks, n)) < 0.3 for n in (100, 37, 1000)]
    packed = np.concatenate([np.packbits(r.T, axis=1) for r in rows])
    coded, hashed = _coded_task_sets(rows, tasks), _distinct_rows(packed)
    assert dict(zip(map(bytes, coded[0]), coded[2])) == dict(zip(map(bytes, hashed[0]), hashed[2]))
    assert np.array_equal(coded[0][coded[1]], packed)
