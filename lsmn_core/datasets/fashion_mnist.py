"""`fashion_mnist`: Fashion-MNIST's 28 x 28 images (values 0..1) read from the IDX `.gz` files with
numpy, from $LSMN_DATA or Debian's dataset-fashion-mnist; its published test set is kept, dev is
drawn from the training images. Targets: the class, footwear, upper body."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from lsmn_core.data.sources import LoadedTask
from lsmn_core.errors import DataError

FOLDERS = ["/usr/share/datasets/fashion-mnist"]
TARGETS = {
    "class": (10, lambda y: y),
    "footwear": (2, lambda y: np.isin(y, [5, 7, 9]).astype(np.int64)),
    "upper_body": (2, lambda y: np.isin(y, [0, 2, 4, 6]).astype(np.int64)),
}


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def folder() -> Path:
    """Where the four IDX files are; a DataError says how to get them."""
    candidates = [os.environ["LSMN_DATA"]] if os.environ.get("LSMN_DATA") else []
    for base in candidates + FOLDERS:
        for where in (Path(base), Path(base) / "fashion-mnist"):
            if (where / "train-images-idx3-ubyte.gz").is_file():
                return where
    raise DataError("Fashion-MNIST is not installed: run 'apt-get install -y dataset-fashion-mnist' or put the "
                    "four IDX .gz files in a folder named by $LSMN_DATA")


def split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The published training or test images and their classes."""
    where = folder()
    prefix = "train" if name == "train" else "t10k"
    images = read_idx(where / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    return images, read_idx(where / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def load(target) -> LoadedTask:
    if target not in TARGETS:
        raise DataError(f"fashion_mnist has no target '{str(target)[:40]}' (known: {', '.join(TARGETS)})")
    n_outputs, label = TARGETS[target]
    splits = {k: (x, label(y)) for k, (x, y) in (("train", split("train")), ("test", split("test")))}
    return LoadedTask(splits, "classification", n_outputs, "image", published=frozenset(splits))
