"""A data set: a callable with the contract of a `source:` factory, called with the task's target
first and its `args` after. It returns the training rows (X, y), a torch Dataset, a dict of those
under "train" (and optionally "dev", "test"), or a lsmn_core.data.sources.LoadedTask that also says
the task's kind, classes and modality. Declaring a keyword parameter `data` gives it the run's
DataConfig (its split seed and fractions); `domain`, the task's input domain.

`rings`: points on three noisy concentric rings in the plane. Targets: `ring` (which ring, 3
classes), `half` (above or below the x axis, unrelated to the ring) and `radius` (a regression).

    tasks: [{name: ring, dataset: rings, target: ring, args: {n: 3000, noise: 0.1}}]
"""

import numpy as np

from lsmn_core.errors import DataError

RADII = (1.0, 2.0, 3.0)
TARGETS = ("ring", "half", "radius")


def load(target, n: int = 3000, noise: float = 0.1, seed: int = 0):
    if target not in TARGETS:
        raise DataError(f"rings has no target {str(target)[:40]!r} (known: {', '.join(TARGETS)})")
    rng = np.random.RandomState(seed)
    ring = rng.randint(0, len(RADII), size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = np.asarray(RADII)[ring] + noise * rng.randn(n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1).astype(np.float32)
    y = {"ring": ring, "half": (x[:, 1] > 0).astype(np.int64), "radius": radius.astype(np.float32)}[target]
    return x, y
