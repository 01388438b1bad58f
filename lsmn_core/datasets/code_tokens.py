"""`code_tokens`: the running interpreter's own standard library, tokenized with `tokenize`, in
windows of 32 tokens: per-token tasks analogous to the sparse-sharing slides' POS tagging, NER and
chunking (the token's kind, its name class, its bracket depth) and one unrelated task (whether the
token's text has an even length). Split by file, seeded; ids from the training files' commonest
token strings."""

from __future__ import annotations

import builtins
import functools
import keyword
import platform
import sysconfig
import tokenize
from pathlib import Path

import numpy as np

from lsmn_core.config import DataConfig
from lsmn_core.data.sources import LoadedTask
from lsmn_core.errors import DataError

WINDOW, VOCAB = 32, 4096  # tokens per sequence; ids: 0 padding, 1 unknown, then the commonest strings
TARGETS = {  # per token, analogues of the sparse-sharing slides' POS tagging, NER and chunking, and one
    "kind": 4,  # unrelated task: name, operator, number, string (tokenize's types)
    "name_class": 4,  # keyword, builtin, other name, not a name
    "depth": 4,  # bracket nesting before the token: 0, 1, 2, 3 or more
    "length_parity": 2,  # whether the token's text has an even length: its spelling, not its role
}
KINDS = {tokenize.NAME: 0, tokenize.OP: 1, tokenize.NUMBER: 2, tokenize.STRING: 3}


def files() -> list[Path]:
    """The running interpreter's own standard library, top-level modules: real text on every machine."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def _file_tokens(path: Path) -> list[tuple[str, list[int]]] | None:
    """(text, [kind, name_class, depth, length_parity]) per token of one file; None if it does not tokenize."""
    try:
        with open(path, "rb") as f:
            raw = list(tokenize.tokenize(f.readline))
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError, OSError):
        return None
    names = set(dir(builtins))
    depth, tokens = 0, []
    for token in raw:
        if token.type not in KINDS:
            continue
        text = token.string
        if token.type == tokenize.NAME:
            name_class = 0 if keyword.iskeyword(text) or keyword.issoftkeyword(text) else 1 if text in names else 2
        else:
            name_class = 3
        tokens.append((text, [KINDS[token.type], name_class, min(depth, 3), len(text) % 2 == 0]))
        if token.type == tokenize.OP and text in "([{":
            depth += 1
        elif token.type == tokenize.OP and text in ")]}":
            depth = max(depth - 1, 0)
    return tokens


def _split_files(split_seed: int, dev_fraction: float, test_fraction: float):
    """Every tokenizable file's tokens, and which files each split holds (seeded)."""
    tokenized = [(p, t) for p in files() if (t := _file_tokens(p))]
    order = np.random.RandomState(split_seed).permutation(len(tokenized))
    n_test, n_dev = max(1, round(len(tokenized) * test_fraction)), max(1, round(len(tokenized) * dev_fraction))
    parts = {"test": order[:n_test], "dev": order[n_test:n_test + n_dev], "train": order[n_test + n_dev:]}
    return tokenized, parts


def _windows_of(tokenized, indices) -> list[list[tuple[str, list[int]]]]:
    """The files' tokens cut into windows of WINDOW tokens, in file order."""
    return [tokenized[i][1][start:start + WINDOW] for i in sorted(indices)
            for start in range(0, len(tokenized[i][1]), WINDOW)]


@functools.lru_cache(maxsize=2)
def windows(split_seed: int, dev_fraction: float, test_fraction: float):
    """Windows of WINDOW tokens of the standard library, split by file (seeded), ids from the
    training files' commonest token strings: ({split: (ids [N, L], targets [N, L, 4])}, -1 at padding;
    the text of each id)."""
    tokenized, parts = _split_files(split_seed, dev_fraction, test_fraction)
    counts: dict[str, int] = {}
    for i in parts["train"]:
        for text, _ in tokenized[i][1]:
            counts[text] = counts.get(text, 0) + 1
    common = sorted(counts, key=lambda t: (-counts[t], t))[:VOCAB - 2]
    ids = {text: 2 + k for k, text in enumerate(common)}
    splits = {}
    for split in ("train", "dev", "test"):
        x, y = [], []
        for window in _windows_of(tokenized, parts[split]):
            pad = WINDOW - len(window)
            x.append([ids.get(text, 1) for text, _ in window] + [0] * pad)
            y.append([labels for _, labels in window] + [[-1] * 4] * pad)
        splits[split] = (np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64))
    return splits, ["<pad>", "<unknown>", *common]


@functools.lru_cache(maxsize=2)
def word_windows(split_seed: int, dev_fraction: float, test_fraction: float):
    """The same windows as text: {split: (each window's token texts, their targets [words, 4])}, for a
    checkpoint's subword tokenizer."""
    tokenized, parts = _split_files(split_seed, dev_fraction, test_fraction)
    splits = {}
    for split in ("train", "dev", "test"):
        cut = _windows_of(tokenized, parts[split])
        words = np.empty(len(cut), dtype=object)
        targets = np.empty(len(cut), dtype=object)
        for i, window in enumerate(cut):
            words[i] = [text for text, _ in window]
            targets[i] = np.asarray([labels for _, labels in window], dtype=np.int64)
        splits[split] = (words, targets)
    return splits


def load(target, *, data: DataConfig, text: bool = False) -> LoadedTask:
    """The target's windows: ids of the data set's own vocabulary, or, when the run reads `text`
    through a checkpoint's tokenizer, each token's text (its label goes to its first sub-word)."""
    if target not in TARGETS:
        raise DataError(f"code_tokens has no target '{str(target)[:40]}' (known: {', '.join(TARGETS)})")
    column = list(TARGETS).index(target)
    description = f"Python {platform.python_version()} standard library ({len(files())} files)"
    if text:
        words = word_windows(data.split_seed, data.dev_fraction, data.test_fraction)
        return LoadedTask({k: (x, _column(y, column)) for k, (x, y) in words.items()}, "tagging", TARGETS[target],
                          "text", description=description)
    splits, vocabulary = windows(data.split_seed, data.dev_fraction, data.test_fraction)
    return LoadedTask({k: (x, y[..., column]) for k, (x, y) in splits.items()}, "tagging", TARGETS[target], "tokens",
                      description=description, vocabulary=vocabulary)


def _column(targets: np.ndarray, column: int) -> np.ndarray:
    """One target's labels of each window (an object array of per-word label arrays)."""
    out = np.empty(len(targets), dtype=object)
    for i, labels in enumerate(targets):
        out[i] = labels[:, column]
    return out
