"""`wordnet`: WordNet 3.0's glosses (the definition and examples of each synset), read from the
dictionary files of Debian's wordnet-base (data.noun, data.verb, data.adj, data.adv), as text tasks:
`pos` (noun, verb, adjective, adverb), `noun_lexname` (the 26 noun lexicographer files:
noun.animal, noun.artifact, ...), `verb_lexname` (the 15 verb files), and two targets of the
gloss's form, not its meaning, unrelated to the others as the sparse-sharing slides set an
unrelated task beside related ones: `has_example` (whether the gloss quotes an example of use) and
`gloss_parity` (whether it has an even number of words; mean-pooled features barely see it).
`size` synsets are drawn (seeded by the split seed) from those the target covers; nothing is
downloaded.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from lsmn_core.config import DataConfig
from lsmn_core.data.sources import LoadedTask
from lsmn_core.errors import DataError

FOLDERS = ["/usr/share/wordnet", "/usr/share/wordnet/dict"]
PARTS = {"noun": 0, "verb": 1, "adj": 2, "adv": 3}  # data file -> pos class (satellite adjectives are adjectives)
LEXNAMES = [  # WordNet's lexicographer files, by number (lexnames(5WN))
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl"]
NOUNS = [i for i, name in enumerate(LEXNAMES) if name.startswith("noun.")]
VERBS = [i for i, name in enumerate(LEXNAMES) if name.startswith("verb.")]
TARGETS = ("pos", "noun_lexname", "verb_lexname", "has_example", "gloss_parity")


def folder() -> Path:
    """Where WordNet's data files are ($LSMN_WORDNET, else Debian's wordnet-base)."""
    candidates = [os.environ["LSMN_WORDNET"]] if os.environ.get("LSMN_WORDNET") else []
    for where in map(Path, candidates + FOLDERS):
        if all((where / f"data.{part}").is_file() for part in PARTS):
            return where
    raise DataError("WordNet is not installed: run 'apt-get install -y wordnet-base' or name a folder holding its "
                    "data.noun, data.verb, data.adj and data.adv in $LSMN_WORDNET")


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=1)
def synsets() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every synset's gloss, part of speech (0..3) and lexicographer file number, in file order; read
    once per process (every task of the data set draws from them). Callers do not change them."""
    glosses, pos, lexnames = [], [], []
    where = folder()
    for part, label in PARTS.items():
        with open(where / f"data.{part}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # the license header
                    continue
                fields, gloss = line.split(" | ", 1)
                glosses.append(gloss.strip())
                pos.append(label)
                lexnames.append(int(fields.split()[1]))
    return glosses, np.asarray(pos, dtype=np.int64), np.asarray(lexnames, dtype=np.int64)


def load(target, *, data: DataConfig, size: int = 4000) -> LoadedTask:
    if target not in TARGETS:
        raise DataError(f"wordnet has no target '{str(target)[:40]}' (known: {', '.join(TARGETS)})")
    if isinstance(size, bool) or not isinstance(size, int) or size < 10:
        raise DataError("wordnet: args.size must be a whole number of synsets, 10 or more")
    glosses, pos, lexnames = synsets()
    if target == "pos":
        rows, labels, classes = np.arange(len(glosses)), pos, len(PARTS)
    elif target in ("noun_lexname", "verb_lexname"):
        files = NOUNS if target == "noun_lexname" else VERBS
        rows = np.flatnonzero(np.isin(lexnames, files))
        labels, classes = np.full(len(glosses), -1), len(files)
        labels[rows] = np.searchsorted(files, lexnames[rows])
    else:
        rows, classes = np.arange(len(glosses)), 2
        form = (lambda g: '"' in g) if target == "has_example" else (lambda g: len(g.split()) % 2 == 0)
        labels = np.asarray([form(g) for g in glosses], dtype=np.int64)
    picked = np.random.RandomState(data.split_seed).permutation(rows)[:size]
    texts = np.empty(len(picked), dtype=object)
    texts[:] = [glosses[i] for i in picked]
    return LoadedTask({"train": (texts, labels[picked])}, "classification", classes, "text",
                      description=f"WordNet 3.0 ({folder()}), {len(picked):,} of {len(rows):,} synsets")
