"""Input domains: the same images seen differently (rotated, blurred, edges, inverted), for any
task with image inputs; domain adaptation trains towards a domain a run has not seen."""

from __future__ import annotations

import numpy as np

from lsmn_core.errors import DataError


def _box_blur(images: np.ndarray) -> np.ndarray:
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = images.shape[1:]
    total = np.zeros_like(images)
    for i in range(3):
        for j in range(3):
            total += padded[:, i : i + h, j : j + w]
    return total / 9.0


def _edges(images: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(images, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    return magnitude / max(magnitude.max(), 1e-8)


DOMAINS = {
    "original": lambda im: im,
    "rotated": lambda im: np.rot90(im, k=1, axes=(1, 2)).copy(),
    "blurred": _box_blur,
    "edges": _edges,
    "inverted": lambda im: 1.0 - im,
}
ORIGINAL = "original"


def apply_domain(images: np.ndarray, domain: str) -> np.ndarray:
    """Images [N, H, W] in input domain `domain`, as float32."""
    if domain not in DOMAINS:
        raise DataError(f"unknown domain '{str(domain)[:40]}' (known: {', '.join(DOMAINS)})")
    return DOMAINS[domain](images).astype(np.float32)
