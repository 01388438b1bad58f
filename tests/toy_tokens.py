"""A dataset factory of token sequences for tests: random ids 1..vocab-1 of random lengths, padded
with 0 to a common length; per sequence whether token 3 occurs, per token whether its id is even."""

import numpy as np


def sequences(n: int = 300, length: int = 12, vocab: int = 9, tagging: bool = False, seed: int = 0):
    rng = np.random.RandomState(seed)
    x = rng.randint(1, vocab, (n, length))
    lengths = rng.randint(3, length + 1, n)
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0
    y = (x % 2 == 0).astype(int) if tagging else (x == 3).any(1).astype(int)
    return x, y
