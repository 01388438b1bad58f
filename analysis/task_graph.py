"""Tasks as a graph of what they share: an edge for each pair weighted by how much the two share (their
masks' overlap ratio, or the cosine similarity of their task vectors, negative where they pull against
each other), the groups that community detection finds among the edges kept, and positions that put
the tasks that share most side by side. Pure functions of a [T, T] similarity matrix."""

from __future__ import annotations

import networkx as nx
import numpy as np

NEIGHBOURS = 4  # past ALL_PAIRS tasks, each task keeps the edges to its this many strongest partners
ALL_PAIRS = 12  # up to this many tasks, every pair is an edge


def _pairs(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(similarity), 1)
    return i, j, np.asarray(similarity, dtype=np.float64)[i, j]


def _nearest(similarity: np.ndarray, neighbours: int) -> np.ndarray:
    """[T, T] whether j is among i's `neighbours` strongest partners (by size), or i among j's."""
    sizes = np.abs(np.asarray(similarity, dtype=np.float64))
    np.fill_diagonal(sizes, -np.inf)
    top = np.argsort(-sizes, axis=1, kind="stable")[:, :neighbours]
    near = np.zeros(sizes.shape, bool)
    np.put_along_axis(near, top, True, axis=1)
    return near | near.T


def task_graph(similarity: np.ndarray, names: list[str], weakest: float) -> nx.Graph:
    """Tasks as nodes; an edge for each pair whose similarity is at least `weakest` in size, its sign
    kept. Past ALL_PAIRS tasks only the pairs where one is among the other's NEIGHBOURS strongest: every
    task keeps its closest partners, and 110 tasks' graph shows groups rather than a hairball."""
    graph = nx.Graph()
    graph.add_nodes_from(names)
    near = _nearest(similarity, NEIGHBOURS) if len(names) > ALL_PAIRS else None
    for a, b, weight in zip(*_pairs(similarity)):
        if weight != 0 and abs(weight) >= weakest and (near is None or near[a, b]):
            graph.add_edge(names[a], names[b], weight=float(weight))
    return graph


def _positive(graph: nx.Graph) -> nx.Graph:
    """The graph of the pairs that share (positive weights), every task kept."""
    positive = nx.Graph()
    positive.add_nodes_from(graph)
    positive.add_weighted_edges_from((a, b, w) for a, b, w in graph.edges(data="weight") if w > 0)
    return positive


def task_groups(graph: nx.Graph) -> list[list[str]]:
    """The groups of tasks that share most among themselves: Louvain communities (greatest modularity,
    a fixed seed) of the positive edges, largest first, each in the graph's task order."""
    order = {task: index for index, task in enumerate(graph)}
    groups = nx.community.louvain_communities(_positive(graph), weight="weight", seed=0)
    members = [sorted(group, key=order.__getitem__) for group in groups]
    return sorted(members, key=lambda group: (-len(group), order[group[0]]))


def task_positions(graph: nx.Graph) -> dict[str, tuple[float, float]]:
    """A force-directed layout (Fruchterman-Reingold, a fixed seed) of the positive edges, each pulling in
    proportion to its weight over the strongest: tasks that share most end up side by side."""
    positive = _positive(graph)
    strongest = max((w for _, _, w in positive.edges(data="weight")), default=1.0)
    for _, _, data in positive.edges(data=True):
        data["pull"] = data["weight"] / strongest
    spread = 1.5 / np.sqrt(max(len(positive), 1))  # a little wider than networkx's default spacing
    positions = nx.spring_layout(positive, weight="pull", seed=0, k=spread)
    return {task: (float(x), float(y)) for task, (x, y) in positions.items()}


def strongest_edges(graph: nx.Graph, most: int) -> list[tuple[str, str, float]]:
    """The `most` edges of greatest size, strongest first."""
    edges = sorted(graph.edges(data="weight"), key=lambda edge: -abs(edge[2]))
    return [(a, b, float(w)) for a, b, w in edges[:most]]


def group_summary(similarity: np.ndarray, names: list[str], groups: list[list[str]]) -> list[dict]:
    """Per group: its tasks, the mean similarity of its pairs and the mean similarity of its tasks to
    every task outside it (a group worth the name shares more inside than out)."""
    matrix = np.asarray(similarity, dtype=np.float64)
    index = {task: i for i, task in enumerate(names)}
    rows = []
    for number, group in enumerate(groups, start=1):
        inside = np.array([index[t] for t in group])
        outside = np.setdiff1d(np.arange(len(names)), inside)
        block = matrix[np.ix_(inside, inside)]
        pairs = block[np.triu_indices(len(inside), 1)]
        rows.append({"group": number, "tasks": len(group), "members": ", ".join(group),
                     "inside": float(pairs.mean()) if pairs.size else None,
                     "to the rest": float(matrix[np.ix_(inside, outside)].mean()) if outside.size else None})
    return rows
