"""How a run reads its text: through its checkpoint's tokenizer (model.pretrained), or through the
tokenizer in data.tokenizer's folder (a network of the Studio's own on the same text)."""

from __future__ import annotations

from pathlib import Path

from lsmn_core.data.text import Tokenization
from lsmn_core.pretrained import loader_of
from lsmn_core.pretrained.huggingface import tokenizer_in


def tokenization(config, cache: Path | None) -> Tokenization | None:
    """The run's tokenizer at data.max_length, caching its results in `cache` (the runs folder's
    data cache); None when the run has none (its text tasks are then refused when loaded)."""
    if config.data.tokenizer is not None:
        tokenizer = tokenizer_in(Path(config.data.tokenizer), "data.tokenizer")
    elif config.model.pretrained is not None:
        tokenizer = loader_of(config.model.pretrained).open(weights=False).tokenizer
    else:
        return None
    return Tokenization(tokenizer, config.data.max_length, cache) if tokenizer is not None else None
