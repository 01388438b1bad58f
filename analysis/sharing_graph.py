"""How tasks share hypermodules, from an alignment {task: [hypermodule per block]}.

The graphs are networkx graphs: hypermodule - block - task, and task - task weighted by the number
of hypermodules both use. The subset breakdown is the poster's analysis figure: of the hypermodules
in use, the proportion used by exactly each set of tasks.
"""

from __future__ import annotations

from collections import Counter
from math import comb

import networkx as nx

Alignment = dict[str, list[int]]


def hypermodule_users(alignment: Alignment) -> dict[int, set[str]]:
    """For every hypermodule in use, the tasks that use it."""
    users: dict[int, set[str]] = {}
    for task, modules in alignment.items():
        for k in modules:
            users.setdefault(k, set()).add(task)
    return users


def usage_counts(alignment: Alignment) -> dict[int, int]:
    """How many block locations use each hypermodule, most used first."""
    return dict(Counter(k for modules in alignment.values() for k in modules).most_common())


def _add_weight(graph: nx.Graph, a, b) -> None:
    """Add edge a - b with weight 1, or add 1 to its weight."""
    graph.add_edge(a, b, weight=graph.edges[a, b]["weight"] + 1 if graph.has_edge(a, b) else 1)


def sharing_graph(alignment: Alignment, blocks: bool = True) -> nx.Graph:
    """Nodes ("task", t), ("hypermodule", k) and, with `blocks`, ("block", t, i): edges task - block -
    hypermodule. Without blocks, task - hypermodule edges weighted by the number of blocks."""
    graph = nx.Graph()
    for task, modules in alignment.items():
        graph.add_node(("task", task), kind="task", label=task)
        for i, k in enumerate(modules):
            graph.add_node(("hypermodule", k), kind="hypermodule", label=f"H{k}")
            if not blocks:
                _add_weight(graph, ("task", task), ("hypermodule", k))
                continue
            block = ("block", task, i)
            graph.add_node(block, kind="block", label=f"{task} block {i}")
            graph.add_edge(("task", task), block, weight=1)
            graph.add_edge(block, ("hypermodule", k), weight=1)
    return graph


def task_graph(alignment: Alignment) -> nx.Graph:
    """Tasks linked by the number of hypermodules they both use (edge attribute "weight")."""
    graph = nx.Graph()
    graph.add_nodes_from(alignment)
    for users in hypermodule_users(alignment).values():
        ordered = sorted(users)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                _add_weight(graph, a, b)
    return graph


def subset_proportions(alignment: Alignment) -> dict[tuple[str, ...], float]:
    """Proportion of the hypermodules in use that exactly each set of tasks uses, largest first."""
    users = hypermodule_users(alignment)
    counts = Counter(tuple(sorted(u)) for u in users.values())
    return {subset: n / len(users) for subset, n in counts.most_common()}


def task_clusters(alignment: Alignment) -> list[list[str]]:
    """Groups of tasks that share with each other (modularity communities of the task graph)."""
    graph = task_graph(alignment)
    if graph.number_of_edges() == 0:
        return [[t] for t in alignment]
    communities = nx.community.greedy_modularity_communities(graph, weight="weight")
    return sorted((sorted(c) for c in communities), key=lambda c: list(alignment).index(c[0]))


def cluster_labels(alignment: Alignment) -> list[int]:
    """Each task's cluster number, in the alignment's task order."""
    label = {t: i for i, cluster in enumerate(task_clusters(alignment)) for t in cluster}
    return [label[t] for t in alignment]


def adjusted_rand_index(a: list, b: list) -> float:
    """Agreement of two labelings of the same items, 1 for identical partitions, ~0 for chance."""
    n = len(a)
    together = sum(comb(v, 2) for v in Counter(zip(a, b)).values())
    in_a = sum(comb(v, 2) for v in Counter(a).values())
    in_b = sum(comb(v, 2) for v in Counter(b).values())
    expected = in_a * in_b / comb(n, 2) if n > 1 else 0.0
    best = (in_a + in_b) / 2
    return 1.0 if best == expected else (together - expected) / (best - expected)
