"""`kang_synthetic`: the 30 related regression tasks of MUiR's synthetic benchmark (Kang et al.,
"Learning with Whom to Share in Multi-task Feature Learning"), generated and seeded. Its target is
a task's index (0..29), its domain `clean` or `noisy`."""

from __future__ import annotations

import numpy as np

from lsmn_core.config import DataConfig
from lsmn_core.data.sources import LoadedTask
from lsmn_core.errors import DataError

TASKS, GROUPS, DIM = 30, 3, 20
TRAIN, VALIDATION, TEST = 15, 5, 50  # MUiR holds 5 of the 15 training samples out
NOISE_STD = 0.1 ** 0.5  # noise variance 0.1


def weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The true weights of the 30 tasks [30, 20] and their groups' directions [3, 20] for a seed."""
    rng = np.random.RandomState(seed)
    directions = rng.randn(GROUPS, DIM)
    scales = rng.randn(TASKS)
    return scales[:, None] * directions[np.arange(TASKS) // (TASKS // GROUPS)], directions


def task_splits(task_index: int, noisy: bool, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One of 30 linear tasks in 3 groups of 10: task t's weights are c_t * u_g, a scalar multiple of
    its group's direction.

    The distributions are those of the published set (MUiR's copy of Kang et al.'s), as measured on
    it: inputs uniform on [-1, 1]^20; u_g ~ N(0, I) and c_t ~ N(0, 1), so a task's targets range from
    about 0.1 to 7 in scale; noisy targets add N(0, 0.1), to training and test targets alike. 15
    training samples per task, of which 5 (drawn per task) are the validation split, as MUiR splits
    them, and 50 test samples.
    """
    true = weights(seed)[0]
    input_rng = np.random.RandomState(seed * 1000 + task_index + 1)
    noise_rng = np.random.RandomState(seed * 1000 + task_index + 500)  # clean and noisy share inputs
    samples = {}
    for name, n in (("train", TRAIN), ("test", TEST)):
        x = input_rng.uniform(-1, 1, size=(n, DIM))
        y = x @ true[task_index]
        if noisy:
            y = y + noise_rng.normal(0, NOISE_STD, size=n)
        samples[name] = (x.astype(np.float32), y.astype(np.float32))
    held_out = np.zeros(TRAIN, dtype=bool)
    held_out[input_rng.choice(TRAIN, VALIDATION, replace=False)] = True
    inputs, targets = samples["train"]
    return {"train": (inputs[~held_out], targets[~held_out]), "dev": (inputs[held_out], targets[held_out]),
            "test": samples["test"]}


def load(target, *, domain: str, data: DataConfig) -> LoadedTask:
    if domain not in ("clean", "noisy", "original"):
        raise DataError("kang_synthetic domain must be 'clean' or 'noisy'")
    index = int(target) if str(target).isdigit() else -1
    if not 0 <= index < TASKS:
        raise DataError("kang_synthetic target must be a task index 0..29")
    return LoadedTask(task_splits(index, domain == "noisy", data.split_seed), "regression", 1, "vector")
