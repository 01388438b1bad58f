"""Offline data sets and the tasks derived from them, with fixed, seeded train/dev/test splits.

Built in: `digits` (scikit-learn, 8x8 images) with derived targets and input domains, `position`
(a synthetic unrelated task on the same kind of image), `fashion_mnist` (IDX files read with numpy),
`kang_synthetic` (MUiR's 30 related regression tasks). User data: `.npz` (X, y) or `.csv` files, or
a dataset factory, a function imported by name that returns the arrays.
"""

from __future__ import annotations

import builtins
import functools
import gzip
import importlib
import importlib.util
import keyword
import os
import platform
import sysconfig
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from lsmn_core.config import DataConfig, TaskConfig
from lsmn_core.errors import DataError
from lsmn_core.data.streaming import checked_dataset, is_dataset
from lsmn_core.data.tasks import IGNORE, PAD, TaskSpec

FASHION_DIRS = ["/usr/share/datasets/fashion-mnist"]


@dataclass
class TaskData:
    spec: TaskSpec
    splits: dict[str, tuple[np.ndarray, np.ndarray] | Dataset]  # split -> (X float32, y int64 | float32), or
    # a Dataset of (x, y) rows for a streamed task (lsmn_core.data.streaming)
    vocabulary: list[str] | None = None  # token tasks: the text of each id, where the data set knows it

    @property
    def streamed(self) -> bool:
        return is_dataset(self.splits["train"])

    def rows(self, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` inputs and targets of a split, as arrays (a streamed task reads only those)."""
        data = self.splits[split]
        if not is_dataset(data):
            return data[0][:count], data[1][:count]
        items = [data[i] for i in range(min(count, len(data)))]
        return (np.stack([np.asarray(x, dtype=np.float32) for x, _ in items]),
                np.asarray([np.asarray(y) for _, y in items]))


# ---- input domains: the same images seen differently ------------------------------------------


def _box_blur(images: np.ndarray) -> np.ndarray:
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = images.shape[1:]
    return sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


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


DOMAIN_DATASETS = ("digits", "position", "fashion_mnist")  # the built-in data sets whose images take a domain


def _apply_domain(images: np.ndarray, domain: str, task: str) -> np.ndarray:
    if domain not in DOMAINS:
        raise DataError(f"task {task}: unknown domain '{domain}' (known: {', '.join(DOMAINS)})")
    return DOMAINS[domain](images).astype(np.float32)


# ---- digits and the synthetic position task ---------------------------------------------------

DIGIT_TARGETS = {
    "digit": (10, lambda d: d),
    "parity": (2, lambda d: d % 2),
    "ge5": (2, lambda d: (d >= 5).astype(np.int64)),
    "mod3": (3, lambda d: d % 3),
    "loops": (3, lambda d: np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1])[d]),  # closed loops in the glyph
    **{f"is{k}": (2, lambda d, k=k: (d == k).astype(np.int64)) for k in range(10)},  # one digit against the rest
}
CLASS_SUBSETS = "'A-vs-B' (digits A and B only, one against the other) or 'in-ABC' (whether the digit is A, B or C)"


def class_subset(target, dataset: str, task: str) -> tuple[set[int] | None, Callable[[np.ndarray], np.ndarray]]:
    """A binary target over a data set's ten classes, for task sets of any size: 'A-vs-B' keeps the rows
    of classes A and B (1: B), 'in-ABC' labels whether the class is one of those given (all rows).
    Returns the kept classes (None: all rows) and the labelling."""
    text = str(target)
    first, _, second = text.partition("-vs-")
    if second and first.isdigit() and second.isdigit() and len(first) == len(second) == 1 and first != second:
        return {int(first), int(second)}, lambda d: (d == int(second)).astype(np.int64)
    members = text[3:] if text.startswith("in-") else ""
    if members.isdigit() and 0 < len(set(members)) == len(members) < 10:
        chosen = np.array([int(c) for c in members])
        return None, lambda d: np.isin(d, chosen).astype(np.int64)
    raise DataError(f"task {task}: {dataset} has no target '{text[:40]}' (known: {', '.join(DIGIT_TARGETS)}, or "
                    f"{CLASS_SUBSETS})" if dataset == "digits" else
                    f"task {task}: {dataset} has targets 'digit' and {CLASS_SUBSETS}; not '{text[:40]}'")


def _subset_splits(splits: dict[str, tuple[np.ndarray, np.ndarray]], target, dataset: str,
                   task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits (x, class) of a class-subset target: the rows whose class it keeps, labelled by it."""
    kept, label = class_subset(target, dataset, task)
    rows = {k: np.isin(c, list(kept)) if kept else slice(None) for k, (_, c) in splits.items()}
    return {k: (x[rows[k]], label(c[rows[k]])) for k, (x, c) in splits.items()}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (8x8, 0..16), read once per process; callers never modify the arrays.

    The CSV that load_digits reads ships inside scikit-learn; reading it with numpy directly avoids
    importing scikit-learn (about 1.5 s), which keeps `lsmn eval` and the app's first view quick.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = bunch.images, bunch.target
    return (images / 16.0).astype(np.float32), target.astype(np.int64)


def _position_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit images with a bright 2x2 marker at a random place; the target is the marker's cell.

    The input looks like the digit tasks' input, but the answer has nothing to do with the digit:
    the unrelated task (the slides' position prediction) that provokes negative transfer.
    """
    images, _ = _digits()
    rng = np.random.RandomState(seed + 7919)
    pick = rng.randint(0, len(images), size=n)
    cells = rng.randint(0, 49, size=n)
    out = images[pick].copy()
    for i, cell in enumerate(cells):
        r, c = divmod(cell, 7)
        out[i, r : r + 2, c : c + 2] = 1.0
    return out, cells.astype(np.int64)


# ---- Fashion-MNIST -----------------------------------------------------------------------------

FASHION_TARGETS = {
    "class": (10, lambda y: y),
    "footwear": (2, lambda y: np.isin(y, [5, 7, 9]).astype(np.int64)),
    "upper_body": (2, lambda y: np.isin(y, [0, 2, 4, 6]).astype(np.int64)),
}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_dir() -> Path:
    candidates = [os.environ["LSMN_DATA"]] if os.environ.get("LSMN_DATA") else []
    for base in candidates + FASHION_DIRS:
        for folder in (Path(base), Path(base) / "fashion-mnist"):
            if (folder / "train-images-idx3-ubyte.gz").is_file():
                return folder
    raise DataError(
        "Fashion-MNIST is not installed: run 'apt-get install -y dataset-fashion-mnist' or put the "
        "four IDX .gz files in a folder named by $LSMN_DATA"
    )


def _fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = fashion_mnist_dir()
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


# ---- MNIST-1D: a 1-D sequence modality --------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D (Greydanus 2020) generated locally with its default settings, never downloaded."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("mnist1d is not installed: run 'pip install mnist1d'") from None
    return make_dataset(get_dataset_args())


# ---- code tokens: the standard library's own source, tokenized -------------------------------

CODE_WINDOW, CODE_VOCAB = 32, 4096  # tokens per sequence; ids: 0 padding, 1 unknown, then the commonest strings
CODE_TARGETS = {  # per token, analogues of the sparse-sharing slides' POS tagging, NER and chunking, and one
    "kind": 4,  # unrelated task: name, operator, number, string (tokenize's types)
    "name_class": 4,  # keyword, builtin, other name, not a name
    "depth": 4,  # bracket nesting before the token: 0, 1, 2, 3 or more
    "length_parity": 2,  # whether the token's text has an even length: its spelling, not its role
}
CODE_KINDS = {tokenize.NAME: 0, tokenize.OP: 1, tokenize.NUMBER: 2, tokenize.STRING: 3}


def code_files() -> list[Path]:
    """The running interpreter's own standard library, top-level modules: real text on every machine."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def _code_file_tokens(path: Path) -> list[tuple[str, list[int]]] | None:
    """(text, [kind, name_class, depth, length_parity]) per token of one file; None if it does not tokenize."""
    try:
        with open(path, "rb") as f:
            raw = list(tokenize.tokenize(f.readline))
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError, OSError):
        return None
    names = set(dir(builtins))
    depth, tokens = 0, []
    for token in raw:
        if token.type not in CODE_KINDS:
            continue
        text = token.string
        if token.type == tokenize.NAME:
            name_class = 0 if keyword.iskeyword(text) or keyword.issoftkeyword(text) else 1 if text in names else 2
        else:
            name_class = 3
        tokens.append((text, [CODE_KINDS[token.type], name_class, min(depth, 3), len(text) % 2 == 0]))
        if token.type == tokenize.OP and text in "([{":
            depth += 1
        elif token.type == tokenize.OP and text in ")]}":
            depth = max(depth - 1, 0)
    return tokens


@functools.lru_cache(maxsize=2)
def code_tokens(split_seed: int, dev_fraction: float, test_fraction: float):
    """Windows of CODE_WINDOW tokens of the standard library, split by file (seeded), ids from the
    training files' commonest token strings: ({split: (ids [N, L], targets [N, L, 4])}, -1 at padding;
    the text of each id)."""
    files = [(p, t) for p in code_files() if (t := _code_file_tokens(p))]
    order = np.random.RandomState(split_seed).permutation(len(files))
    n_test, n_dev = max(1, round(len(files) * test_fraction)), max(1, round(len(files) * dev_fraction))
    parts = {"test": order[:n_test], "dev": order[n_test:n_test + n_dev], "train": order[n_test + n_dev:]}
    counts: dict[str, int] = {}
    for i in parts["train"]:
        for text, _ in files[i][1]:
            counts[text] = counts.get(text, 0) + 1
    common = sorted(counts, key=lambda t: (-counts[t], t))[:CODE_VOCAB - 2]
    ids = {text: 2 + k for k, text in enumerate(common)}
    splits = {}
    for split in ("train", "dev", "test"):
        x, y = [], []
        for i in sorted(parts[split]):
            tokens = files[i][1]
            for start in range(0, len(tokens), CODE_WINDOW):
                window = tokens[start:start + CODE_WINDOW]
                pad = CODE_WINDOW - len(window)
                x.append([ids.get(text, 1) for text, _ in window] + [0] * pad)
                y.append([labels for _, labels in window] + [[-1] * 4] * pad)
        splits[split] = (np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64))
    return splits, ["<pad>", "<unknown>", *common]


# ---- Kang et al.'s synthetic regression benchmark ---------------------------------------------

KANG_TASKS, KANG_GROUPS, KANG_DIM = 30, 3, 20
KANG_TRAIN, KANG_VALIDATION, KANG_TEST = 15, 5, 50  # MUiR holds 5 of the 15 training samples out
KANG_NOISE_STD = 0.1 ** 0.5  # noise variance 0.1


def kang_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The true weights of the 30 tasks [30, 20] and their groups' directions [3, 20] for a seed."""
    rng = np.random.RandomState(seed)
    directions = rng.randn(KANG_GROUPS, KANG_DIM)
    scales = rng.randn(KANG_TASKS)
    return scales[:, None] * directions[np.arange(KANG_TASKS) // (KANG_TASKS // KANG_GROUPS)], directions


def kang_synthetic(task_index: int, noisy: bool, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One of 30 linear tasks in 3 groups of 10: task t's weights are c_t * u_g, a scalar multiple of
    its group's direction.

    The distributions are those of the published set (MUiR's copy of Kang et al.'s, "Learning with
    Whom to Share in Multi-task Feature Learning"), as measured on it: inputs uniform on [-1, 1]^20;
    u_g ~ N(0, I) and c_t ~ N(0, 1), so a task's targets range from about 0.1 to 7 in scale; noisy
    targets add N(0, 0.1), to training and test targets alike. 15 training samples per task, of which
    5 (drawn per task) are the validation split, as MUiR splits them, and 50 test samples.
    """
    weights = kang_weights(seed)[0]
    input_rng = np.random.RandomState(seed * 1000 + task_index + 1)
    noise_rng = np.random.RandomState(seed * 1000 + task_index + 500)  # clean and noisy share inputs
    samples = {}
    for split, n in (("train", KANG_TRAIN), ("test", KANG_TEST)):
        x = input_rng.uniform(-1, 1, size=(n, KANG_DIM))
        y = x @ weights[task_index]
        if noisy:
            y = y + noise_rng.normal(0, KANG_NOISE_STD, size=n)
        samples[split] = (x.astype(np.float32), y.astype(np.float32))
    held_out = np.zeros(KANG_TRAIN, dtype=bool)
    held_out[input_rng.choice(KANG_TRAIN, KANG_VALIDATION, replace=False)] = True
    x, y = samples["train"]
    return {"train": (x[~held_out], y[~held_out]), "dev": (x[held_out], y[held_out]), "test": samples["test"]}


# ---- user files --------------------------------------------------------------------------------


SPLIT_ARRAYS = {"train": ("X", "y"), "dev": ("X_dev", "y_dev"), "test": ("X_test", "y_test")}


def _read_user_file(task: TaskConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits a task's files give: always train; dev and test where the .npz holds X_dev, y_dev
    or X_test, y_test, or the task names a dev_file or test_file (.csv or .npz)."""
    given = _read_split_file(task, Path(task.file), allow_splits=True)
    for split, file in (("dev", task.dev_file), ("test", task.test_file)):
        if file is not None:
            if split in given:
                raise DataError(f"task {task.name}: the {split} split is given twice ({Path(task.file).name} "
                                f"holds it and {split}_file names {Path(file).name})")
            given[split] = _read_split_file(task, Path(file), allow_splits=False)["train"]
    features = {x.shape[1:] for x, _ in given.values()}
    if len(features) > 1:
        raise DataError(f"task {task.name}: the splits' X have different feature shapes {sorted(features)}")
    return given


def _call_factory(task: TaskConfig) -> dict[str, tuple[np.ndarray, np.ndarray] | Dataset]:
    """A dataset factory `source: "package.module:function"`, imported by name and called with
    `args`; it returns the training rows, or {"train": ..., "dev": ..., "test": ...}, each split an
    (X, y) pair of arrays or a torch Dataset of (x, y) rows (then the task is streamed)."""
    module_name, _, function_name = task.source.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DataError(f"task {task.name}: cannot import the factory {task.source!r} ({exc}); put its module on "
                        "PYTHONPATH") from None
    if not callable(factory):
        raise DataError(f"task {task.name}: {task.source!r} is not a function")
    try:
        result = factory(**task.args)
    except TypeError as exc:
        raise DataError(f"task {task.name}: {task.source}(**args) failed: {exc}") from None
    if isinstance(result, tuple) and len(result) == 2 or is_dataset(result):
        result = {"train": result}
    if not (isinstance(result, dict) and "train" in result and set(result) <= set(SPLIT_ARRAYS)
            and all(isinstance(v, tuple) and len(v) == 2 or is_dataset(v) for v in result.values())):
        raise DataError(f"task {task.name}: the factory {task.source} must return (X, y), a torch Dataset, or a dict "
                        f"of those under 'train' (and optionally 'dev', 'test'), got {type(result).__name__}")
    if any(map(is_dataset, result.values())):
        if not all(map(is_dataset, result.values())):
            raise DataError(f"task {task.name}: the factory {task.source} returned Datasets for some splits and "
                            "arrays for others; give every split the same way")
        return {split: checked_dataset(task.name, split, dataset) for split, dataset in result.items()}
    given = {}
    for split, (x, y) in result.items():
        try:
            x, y = np.asarray(x), np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise DataError(f"task {task.name}: the factory's {split} split is not arrays ({exc})") from None
        given[split] = _checked_split(task, x, y, f"{task.source} ({split})", split)
    return given


def _checked_split(task: TaskConfig, x: np.ndarray, y: np.ndarray, where: str, split: str):
    """One split's X and y, checked: equal lengths, numeric X of 2 or 3 dimensions, finite (token
    ids: integers >= 0, at least one real token per sequence; y per sequence or per token)."""
    if len(x) != len(y) or len(x) < (5 if split == "train" else 1):
        raise DataError(f"task {task.name}: {where}: X and y must have the same length"
                        + (" of at least 5 samples" if split == "train" else ""))
    if task.tokens:
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer) or (x < 0).any():
            raise DataError(f"task {task.name}: {where}: token ids must be integers >= 0 of shape [N, length] "
                            f"(0 the padding)")
        if not (x != PAD).any(1).all():
            raise DataError(f"task {task.name}: {where}: every sequence needs at least one token that is not padding")
        if y.ndim == 2 and y.shape != x.shape:
            raise DataError(f"task {task.name}: {where}: per-token targets must have X's shape {list(x.shape)}")
        return x.astype(np.int64), y
    if x.ndim not in (2, 3) or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"task {task.name}: {where}: X must be numeric with shape [N, features] or [N, H, W]")
    if not np.all(np.isfinite(x)):
        raise DataError(f"task {task.name}: {where}: X contains NaN or infinite values")
    return x.astype(np.float32), y


def _read_split_file(task: TaskConfig, path: Path, allow_splits: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not path.is_file():
        raise DataError(f"task {task.name}: data file not found: {path}")
    if path.suffix == ".npz":
        names = SPLIT_ARRAYS if allow_splits else {"train": SPLIT_ARRAYS["train"]}
        try:
            with np.load(path, allow_pickle=False) as archive:
                known = [a for pair in names.values() for a in pair]
                unknown = sorted(set(archive.files) - set(known))
                if unknown:
                    raise DataError(f"task {task.name}: {path.name} holds arrays this loader does not know: "
                                    f"{', '.join(unknown)[:200]} (known: {', '.join(known)})")
                given = {}
                for split, (x_name, y_name) in names.items():
                    if (x_name in archive) != (y_name in archive):
                        raise DataError(f"task {task.name}: {path.name} holds one of {x_name} and {y_name} "
                                        "without the other")
                    if x_name in archive:
                        given[split] = (archive[x_name], archive[y_name])
                if "train" not in given:
                    raise DataError(f"task {task.name}: {path} must hold arrays 'X' and 'y'")
        except (ValueError, OSError) as exc:
            raise DataError(f"task {task.name}: cannot read {path}: {exc}") from None
    elif path.suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except Exception as exc:  # pandas raises many parser error types
            raise DataError(f"task {task.name}: cannot read {path}: {exc}") from None
        if task.target not in frame.columns:
            raise DataError(f"task {task.name}: column '{task.target}' not in {path.name} "
                            f"(columns: {', '.join(map(str, frame.columns))})")
        features = frame.drop(columns=[task.target])
        non_numeric = [c for c in features.columns if not np.issubdtype(features[c].dtype, np.number)]
        if non_numeric:
            raise DataError(f"task {task.name}: feature column '{non_numeric[0]}' is not numeric")
        given = {"train": (features.to_numpy(), frame[task.target].to_numpy())}
    else:
        raise DataError(f"task {task.name}: data files must be .npz or .csv, got {path.name}")
    return {split: _checked_split(task, x, y, f"{path.name} ({split})", split) for split, (x, y) in given.items()}


def _infer_kind(y: np.ndarray, declared: str | None) -> str:
    if declared:
        return declared
    integral = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_) or y.dtype.kind in "OU"
    return "classification" if integral or len(np.unique(y)) <= 20 and np.all(y == np.round(y)) else "regression"


# ---- splitting and assembling tasks ------------------------------------------------------------


def split_indices(n: int, data: DataConfig) -> dict[str, np.ndarray]:
    """A fixed permutation of n samples (seeded by data.split_seed) cut into train/dev/test."""
    order = np.random.RandomState(data.split_seed).permutation(n)
    n_test = max(1, int(round(n * data.test_fraction)))
    n_dev = max(1, int(round(n * data.dev_fraction)))
    return {"test": order[:n_test], "dev": order[n_test : n_test + n_dev], "train": order[n_test + n_dev :]}


def split_with_given_test(x: np.ndarray, y: np.ndarray, test: tuple[np.ndarray, np.ndarray],
                          data: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Splits for a data set that comes with its own test set: dev is carved from the train set."""
    return assemble_splits({"train": (x, y), "test": test}, data)


def _drawn_rows(n: int, given: set[str], data: DataConfig) -> dict[str, np.ndarray]:
    """Which training rows stay for training and which form the splits not given (seeded by
    data.split_seed)."""
    if "dev" not in given and "test" not in given:
        return split_indices(n, data)
    if "dev" not in given:  # a published test set: dev carved from the training rows
        drawn = split_indices(n, DataConfig(data.split_seed, data.dev_fraction, 0.01))
        return {"train": np.concatenate([drawn["train"], drawn["test"]]), "dev": drawn["dev"]}
    if "test" not in given:
        order = np.random.RandomState(data.split_seed).permutation(n)
        n_test = max(1, int(round(n * data.test_fraction)))
        return {"test": order[:n_test], "train": order[n_test:]}
    return {"train": np.arange(n)}


def assemble_splits(given: dict[str, tuple[np.ndarray, np.ndarray] | Dataset],
                    data: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray] | Dataset]:
    """The given splits as given; a missing dev or test split drawn from the training rows."""
    train = given["train"]
    rows = _drawn_rows(len(train) if is_dataset(train) else len(train[1]), set(given), data)
    if is_dataset(train):
        splits = {split: Subset(train, i.tolist()) for split, i in rows.items()}
    else:
        splits = {split: (train[0][i], train[1][i]) for split, i in rows.items()}
    splits.update({split: given[split] for split in ("dev", "test") if split in given})
    return {split: splits[split] for split in ("train", "dev", "test")}


def _standardise_vectors(splits: dict) -> dict:
    """Scale vector features by train statistics, so user tabular data trains without tuning."""
    x_train = splits["train"][0]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return {k: (((x - mean) / std).astype(np.float32), y) for k, (x, y) in splits.items()}


def load_task(task: TaskConfig, data: DataConfig) -> TaskData:
    """Load one task's splits and describe it; raises DataError with a fix when data is missing."""
    vocabulary = None
    if task.file is not None or task.source is not None:
        given = _read_user_file(task) if task.file is not None else _call_factory(task)
        if is_dataset(given["train"]):
            return _streamed_task(task, given, data)
        tagging = task.tokens and given["train"][1].ndim == 2
        labels = np.concatenate([y[x != PAD] if tagging else y for x, y in given.values()])
        kind = _infer_kind(labels, task.kind)
        if tagging:  # labels of real tokens encoded 0..C-1, padding ignored
            if kind != "classification":
                raise DataError(f"task {task.name}: per-token targets must be classes")
            classes = np.unique(labels)
            given = {k: (x, np.where(x == PAD, IGNORE, np.searchsorted(classes, y)).astype(np.int64))
                     for k, (x, y) in given.items()}
            n_out, kind = len(classes), "tagging"
        elif kind == "classification":  # one encoding of the labels of every split
            classes, codes = np.unique(labels, return_inverse=True)
            bounds = np.cumsum([0] + [len(y) for _, y in given.values()])
            given = {k: (x, codes[lo:hi].astype(np.int64)) for (k, (x, _)), lo, hi in
                     zip(given.items(), bounds, bounds[1:])}
            n_out = len(classes)
        else:
            given, n_out = {k: (x, y.astype(np.float32)) for k, (x, y) in given.items()}, 1
        origin = {split: "given" if split in given else "drawn" for split in ("train", "dev", "test")}
        splits = assemble_splits(given, data)
        x = splits["train"][0]
        if x.ndim == 2 and task.standardise and not task.tokens:
            splits = _standardise_vectors(splits)
        modality = "tokens" if task.tokens else "vector" if x.ndim == 2 else "image"
        source = (f"file {Path(task.file).name}, target {task.target or 'y'}" if task.file is not None else
                  f"factory {task.source}")
    else:
        splits, kind, n_out, modality = _builtin(task, data)
        published = "given" if task.dataset in ("fashion_mnist", "mnist1d") else "drawn"  # their own test sets
        origin = {"train": published, "dev": "drawn", "test": published}
        source = f"{task.dataset}, target {task.target}, domain {task.domain}"
        if task.dataset == "code_tokens":  # the text is this interpreter's own: record which
            source += f", Python {platform.python_version()} standard library ({len(code_files())} files)"
            vocabulary = code_tokens(data.split_seed, data.dev_fraction, data.test_fraction)[1]
    if task.limit:
        splits["train"] = tuple(a[: task.limit] for a in splits["train"])
    x_train = splits["train"][0]
    vocab = int(max(x.max() for x, _ in splits.values())) + 1 if modality == "tokens" else 0
    spec = TaskSpec(
        name=task.name, kind=kind, n_outputs=n_out, modality=modality,
        input_shape=list(x_train.shape[1:]), sizes={k: len(v[1]) for k, v in splits.items()}, source=source,
        splits=origin, vocab=vocab,
    )
    return TaskData(spec, splits, vocabulary)


def _streamed_task(task: TaskConfig, given: dict[str, Dataset], data: DataConfig) -> TaskData:
    """A task whose splits are Datasets: described from its first rows and the config, read in
    batches while it trains. Its rows are used as the Dataset gives them (not standardised)."""
    if task.tokens:
        raise DataError(f"task {task.name}: token tasks are read from arrays; streaming reads image and vector rows")
    try:
        first = {split: dataset[0] for split, dataset in given.items()}
        shapes = {split: list(np.shape(row[0])) for split, row in first.items()}
        label = np.asarray(first["train"][1])
    except Exception as exc:  # the user's Dataset may raise anything
        raise DataError(f"task {task.name}: the dataset's first row must be an (x, y) pair of arrays "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if len({tuple(s) for s in shapes.values()}) > 1:
        raise DataError(f"task {task.name}: the splits' rows have different shapes {shapes}")
    shape = shapes["train"]
    if len(shape) not in (1, 2) or label.ndim != 0:
        raise DataError(f"task {task.name}: a streamed row must be x of shape [features] or [H, W] and a scalar y, "
                        f"got x {shape} and y {list(label.shape)}")
    kind = task.kind or ("classification" if np.issubdtype(label.dtype, np.integer) else "regression")
    classes = 0
    if kind == "classification":
        classes = task.classes or len(getattr(given["train"], "classes", ()))
        if not classes:
            raise DataError(f"task {task.name}: a streamed classification task needs its number of classes: "
                            "set `classes: N` (labels 0 .. N-1) or give the Dataset a `classes` list")
    splits = assemble_splits(given, data)
    if task.limit:
        splits["train"] = Subset(splits["train"], range(min(task.limit, len(splits["train"]))))
    spec = TaskSpec(
        name=task.name, kind=kind, n_outputs=classes or 1, modality="vector" if len(shape) == 1 else "image",
        input_shape=shape, sizes={k: len(v) for k, v in splits.items()},
        source=f"factory {task.source} (streamed)",
        splits={split: "given" if split in given else "drawn" for split in ("train", "dev", "test")},
    )
    return TaskData(spec, splits)


def _builtin(task: TaskConfig, data: DataConfig):
    name, target = task.dataset, task.target
    if name == "digits":
        images, digits = _digits()
        x, idx = _apply_domain(images, task.domain, task.name), split_indices(len(digits), data)
        if target not in DIGIT_TARGETS:
            splits = {k: (x[i], digits[i]) for k, i in idx.items()}
            return _subset_splits(splits, target, name, task.name), "classification", 2, "image"
        n_out, fn = DIGIT_TARGETS[target]
        y = fn(digits).astype(np.int64)
        return {k: (x[i], y[i]) for k, i in idx.items()}, "classification", n_out, "image"
    if name == "position":
        if target not in (None, "cell"):
            raise DataError(f"task {task.name}: position has one target, 'cell'")
        images, cells = _position_images(len(_digits()[1]), data.split_seed)
        x = _apply_domain(images, task.domain, task.name)
        idx = split_indices(len(x), data)
        return {k: (x[i], cells[i]) for k, i in idx.items()}, "classification", 49, "image"
    if name == "fashion_mnist":
        if target not in FASHION_TARGETS:
            raise DataError(f"task {task.name}: fashion_mnist has no target '{target}' "
                            f"(known: {', '.join(FASHION_TARGETS)})")
        n_out, fn = FASHION_TARGETS[target]
        splits = split_with_given_test(*_fashion("train"), _fashion("test"), data)
        splits = {k: (_apply_domain(x, task.domain, task.name), fn(y)) for k, (x, y) in splits.items()}
        return splits, "classification", n_out, "image"
    if name == "mnist1d":
        raw = _mnist1d()
        test = (raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int64))
        splits = split_with_given_test(raw["x"].astype(np.float32), raw["y"].astype(np.int64), test, data)
        if target in (None, "digit"):
            return splits, "classification", 10, "sequence"
        return _subset_splits(splits, target, name, task.name), "classification", 2, "sequence"
    if name == "kang_synthetic":
        if task.domain not in ("clean", "noisy", "original"):
            raise DataError(f"task {task.name}: kang_synthetic domain must be 'clean' or 'noisy'")
        index = int(target) if str(target).isdigit() else -1
        if not 0 <= index < KANG_TASKS:
            raise DataError(f"task {task.name}: kang_synthetic target must be a task index 0..29")
        return kang_synthetic(index, task.domain == "noisy", data.split_seed), "regression", 1, "vector"
    if name == "code_tokens":
        if target not in CODE_TARGETS:
            raise DataError(f"task {task.name}: code_tokens has no target '{target}' "
                            f"(known: {', '.join(CODE_TARGETS)})")
        column = list(CODE_TARGETS).index(target)
        splits = {k: (x, y[..., column]) for k, (x, y) in
                  code_tokens(data.split_seed, data.dev_fraction, data.test_fraction)[0].items()}
        return splits, "tagging", CODE_TARGETS[target], "tokens"
    known = "digits, position, fashion_mnist, mnist1d, kang_synthetic, code_tokens"
    raise DataError(f"task {task.name}: unknown dataset '{name}' (known: {known}; or give 'file')")


def load_tasks(tasks: list[TaskConfig], data: DataConfig) -> list[TaskData]:
    return [load_task(t, data) for t in tasks]


def check_data_fits(trained: list[TaskSpec], data: list[TaskData]) -> None:
    """The data loaded again for a stored run (to evaluate or fine-tune it) against what its model was
    built for: the same inputs, classes and token ids, or one line saying what changed. A token task
    keeps the vocabulary it was trained with."""
    for spec, task in zip(trained, data):
        now = task.spec
        if now.input_shape != spec.input_shape or now.modality != spec.modality:
            raise DataError(f"task {spec.name}: its data now has {now.modality} inputs of shape {now.input_shape}, "
                            f"the run's model reads {spec.modality} {spec.input_shape}")
        if (now.kind, now.n_outputs) != (spec.kind, spec.n_outputs):
            raise DataError(f"task {spec.name}: its data is now {now.kind} with {now.n_outputs} outputs, the run's "
                            f"model was trained for {spec.kind} with {spec.n_outputs}")
        if now.vocab > spec.vocab:
            raise DataError(f"task {spec.name}: its data now holds token id {now.vocab - 1}, out of the range the "
                            f"run's model knows (0 .. {spec.vocab - 1})")
        now.vocab = spec.vocab
