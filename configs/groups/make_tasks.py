"""Writes the user-data example for the MUiR search: one .npz (X, y) per regression task.

Four groups of uneven sizes (3, 4, 2, 3 tasks) in 16 dimensions, unlike Kang's 3 groups of 10. Each
group has one direction; a task's weights are that direction times its own scale in [0.5, 2]. With 10
training samples per task no task can find its 16 weights alone; tasks that share a hypermodule can.
Run `python configs/groups/make_tasks.py` to regenerate the files (numpy only, seeded).
"""

from pathlib import Path

import numpy as np

GROUPS = [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3]
DIM, SAMPLES, SEED = 16, 40, 5


def main(folder: Path = Path(__file__).parent) -> None:
    rng = np.random.RandomState(SEED)
    directions = rng.randn(max(GROUPS) + 1, DIM)
    for t, g in enumerate(GROUPS):
        x = rng.uniform(-1, 1, (SAMPLES, DIM))
        y = x @ (rng.uniform(0.5, 2) * directions[g])
        np.savez(folder / f"task{t:02d}.npz", X=x.astype(np.float32), y=y.astype(np.float32))


if __name__ == "__main__":
    main()
