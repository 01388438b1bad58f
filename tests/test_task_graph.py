"""The sharing graph of tasks: edges by similarity, Louvain groups, a layout that keeps groups together."""

import json

import numpy as np
import pytest

from analysis.task_graph import ALL_PAIRS, NEIGHBOURS, group_summary, task_graph, task_groups, task_positions
from app.overlap_graph import task_graph_figure


def planted(sizes: list[int], inside: float, outside: float, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """A similarity matrix with planted groups: `inside` within a group, `outside` across, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    noise = rng.uniform(0, 0.05, (len(labels),) * 2)
    similarity = np.where(labels[:, None] == labels[None, :], inside, outside) + noise
    similarity = (similarity + similarity.T) / 2
    np.fill_diagonal(similarity, 1.0)
    return similarity, [f"task{i}" for i in range(len(labels))]


def test_the_groups_found_are_the_planted_ones_and_each_sits_together():
    similarity, names = planted([12, 10, 8], inside=0.6, outside=0.1)
    graph = task_graph(similarity, names, weakest=0.0)
    groups = task_groups(graph)
    assert [len(g) for g in groups] == [12, 10, 8]
    assert groups[0] == names[:12] and groups[1] == names[12:22] and groups[2] == names[22:]
    positions = task_positions(graph)
    centre = {i: np.mean([positions[t] for t in g], axis=0) for i, g in enumerate(groups)}
    for i, group in enumerate(groups):  # each task is nearer its own group's centre than any other's
        for task in group:
            distances = {j: np.linalg.norm(np.subtract(positions[task], c)) for j, c in centre.items()}
            assert min(distances, key=distances.get) == i, task
    rows = group_summary(similarity, names, groups)
    assert all(row["inside"] > 0.55 and row["to the rest"] < 0.2 for row in rows)


def test_past_a_dozen_tasks_each_keeps_its_closest_partners_and_the_weakest_edge_is_honoured():
    similarity, names = planted([40, 40, 30], inside=0.5, outside=0.2, seed=1)
    graph = task_graph(similarity, names, weakest=0.0)
    assert len(names) > ALL_PAIRS and all(graph.degree(t) >= NEIGHBOURS for t in names)
    assert graph.number_of_edges() <= NEIGHBOURS * len(names)  # not every pair: 5,995 of them
    strongest = {t: max((n for n in names if n != t), key=lambda n: similarity[names.index(t), names.index(n)])
                 for t in names}
    assert all(graph.has_edge(t, n) for t, n in strongest.items())
    strict = task_graph(similarity, names, weakest=0.45)
    assert strict.number_of_edges() and all(abs(w) >= 0.45 for _, _, w in strict.edges(data="weight"))


def test_a_pair_that_pulls_against_each_other_is_an_edge_drawn_dashed_but_never_pulls_the_layout():
    similarity = np.array([[1.0, 0.4, -0.3], [0.4, 1.0, 0.05], [-0.3, 0.05, 1.0]])
    names = ["a", "b", "c"]
    graph = task_graph(similarity, names, weakest=0.1)
    assert graph["a"]["c"]["weight"] == pytest.approx(-0.3) and not graph.has_edge("b", "c")
    figure, groups = task_graph_figure(similarity, names, 0.1, "cosine", "the whole network")
    dashed = [t for t in figure.data if t.mode == "lines" and t.line.dash == "dash"]
    assert len(dashed) == 1 and len([x for x in dashed[0].x if x is not None]) == 2
    assert ["a", "b"] in groups  # the negative pair is never put in one group by it
    hover = next(t for t in figure.data if t.mode == "markers" and t.marker.opacity == 0)
    assert sorted(hover.text) == ["a · b: 0.400", "a · c: -0.300"]
    assert json.loads(figure.to_json())["layout"]["meta"]["caption"]


def test_at_110_tasks_the_figure_names_groups_not_every_task():
    similarity, names = planted([30, 30, 25, 25], inside=0.5, outside=0.1, seed=2)
    figure, groups = task_graph_figure(similarity, names, 0.0, "overlap", "layer 1")
    assert len(groups) == 4
    assert [a.text for a in figure.layout.annotations] == [f"<b>group {i}</b>" for i in range(1, 5)]
    assert all(t.mode != "markers+text" for t in figure.data)  # tasks named on hover only
    assert sum(len(t.x) for t in figure.data if t.mode == "markers" and t.marker.opacity != 0) == 110
