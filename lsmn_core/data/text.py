"""Text tasks through a pretrained checkpoint's tokenizer: sentences become token ids (truncated to
data.max_length, padded to the longest sequence with the tokenizer's padding id); a tagging task's
words are split into sub-words, and each word's label goes to its first sub-word (the others are
ignored). The result is cached in the runs folder's data cache under a hash of the text, the
labels' shape, the tokenizer and the length, so a second run does not tokenize again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from lsmn_core.data.tasks import IGNORE
from lsmn_core.errors import DataError
from lsmn_core.store.files import atomic_write


def is_text(x) -> bool:
    """Whether a split's inputs are text: strings, or lists of words (a tagging task)."""
    first = x[0] if len(x) else None
    return isinstance(first, str) or (isinstance(first, (list, tuple, np.ndarray)) and len(first) > 0
                                      and all(isinstance(w, str) for w in first))


class Tokenization:
    """A checkpoint's tokenizer at a maximum length, with a cache folder (None: no cache)."""

    def __init__(self, tokenizer, max_length: int, cache: Path | None = None):
        if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token  # a decoder's tokenizer pads with its end of sequence
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise DataError("the checkpoint's tokenizer has neither a padding nor an end-of-sequence token")
        self.tokenizer, self.max_length, self.cache = tokenizer, max_length, cache
        self.pad = int(tokenizer.pad_token_id)
        self.vocab = len(tokenizer)
        self.fingerprint = _fingerprint(tokenizer)

    @functools.cached_property
    def tokens(self) -> list[str]:
        """Each id's token, as the app labels attributions (once per tokenizer: every text task shares it)."""
        return self.tokenizer.convert_ids_to_tokens(list(range(self.vocab)))

    def encode(self, texts, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Token ids [N, L] of `texts` (strings, or lists of words), and for lists of words their
        per-word `labels` [N, words] moved to each word's first sub-word ([N, L], IGNORE elsewhere)."""
        texts = [t if isinstance(t, str) else list(t) for t in texts]
        tagging = bool(texts) and not isinstance(texts[0], str)
        key = self._key(texts, labels if tagging else None)
        cached = self._cached(key)
        if cached is not None:
            return cached["ids"], cached["labels"] if tagging else labels
        encoded = self.tokenizer(texts, is_split_into_words=tagging, truncation=True, max_length=self.max_length,
                                 padding="longest", return_tensors="np")
        ids = encoded["input_ids"].astype(np.int64)
        moved = labels
        if tagging:
            if labels is None:
                raise DataError("a tagging task's words need labels")
            moved = np.full(ids.shape, IGNORE, dtype=np.int64)
            for row in range(len(texts)):
                seen = set()
                for position, word in enumerate(encoded.word_ids(row)):
                    if word is not None and word not in seen:
                        seen.add(word)
                        moved[row, position] = labels[row][word]
        self._store(key, ids, moved if tagging else None)
        return ids, moved

    def _key(self, texts, labels) -> str:
        digest = hashlib.sha256(json.dumps([self.fingerprint, self.max_length, texts]).encode())
        for row in labels if labels is not None else ():  # a tagged text's labels, row by row (rows differ in length)
            digest.update(np.ascontiguousarray(np.asarray(row, dtype=np.int64)).tobytes())
        return digest.hexdigest()[:24]

    def _cached(self, key: str) -> dict | None:
        path = self.cache / f"tokens-{key}.npz" if self.cache else None
        if path is None or not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return {"ids": stored["ids"], "labels": stored["labels"] if "labels" in stored else None}

    def _store(self, key: str, ids: np.ndarray, labels: np.ndarray | None) -> None:
        if self.cache is None:
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        arrays = {"ids": ids, **({"labels": labels} if labels is not None else {})}

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, allow_pickle=False, **arrays)

        atomic_write(self.cache / f"tokens-{key}.npz", write)


def _fingerprint(tokenizer) -> str:
    """What identifies a tokenizer's behaviour: its serialised form where it has one (a fast
    tokenizer), without the truncation and padding settings that each call sets (those are the
    cache key's own), else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    settings = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
