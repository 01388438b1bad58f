"""Tiny random checkpoints for the tests, never a hub download: transformers' config classes made
small (a BERT, a DistilBERT, a GPT-2) and saved with save_pretrained beside a tokenizer built from a
small vocabulary file; a small convolutional module of a user's with its weights file; and text
factories (`source: "tiny_models:sentences"`)."""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

WORDS = "the a of to and in is it that for on with as was by an be this are or at from not cat dog".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz",
         *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]


def tokenizer(folder: Path):
    """A WordPiece tokenizer of VOCAB, read from the vocabulary file it writes into `folder`."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer.from_pretrained(folder, local_files_only=True)


def hf_model(folder: Path, family: str = "bert", with_tokenizer: bool = True) -> Path:
    """A tiny random model of `family` saved in `folder` (2 layers of width 32), with its tokenizer."""
    from transformers import (BertConfig, BertModel, DistilBertConfig, DistilBertModel, GPT2Config,
                              GPT2Model)

    torch.manual_seed(0)
    size = len(VOCAB)
    model = {"bert": lambda: BertModel(BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=2, intermediate_size=64,
                                                  max_position_embeddings=64)),
             "distilbert": lambda: DistilBertModel(DistilBertConfig(vocab_size=size, dim=32, n_layers=2, n_heads=2,
                                                                    hidden_dim=64, max_position_embeddings=64)),
             "gpt2": lambda: GPT2Model(GPT2Config(vocab_size=size, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                                  bos_token_id=3, eos_token_id=3))}[family]()
    model.save_pretrained(folder)
    if with_tokenizer:
        tokenizer(folder).save_pretrained(folder)
    return folder


class TinyConv(nn.Module):
    """A user's image network: a stem, a list of residual conv blocks (the layers), pooled features."""

    def __init__(self, width: int = 8, depth: int = 2):
        super().__init__()
        self.width = width
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
                                    for _ in range(depth))

    def forward(self, x):
        h = self.stem(x.unsqueeze(1))
        for block in self.blocks:
            h = h + block(h)
        return h.mean((-2, -1))


def user_module(folder: Path) -> Path:
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(TinyConv().state_dict(), str(folder / "tiny_conv.safetensors"))
    return folder / "tiny_conv.safetensors"


SENTENCE_TASKS = [{"name": "cat", "source": "tiny_models:sentences", "args": {"target": "has_cat"}},
                  {"name": "parity", "source": "tiny_models:sentences", "args": {"target": "parity", "seed": 1}}]
TOKEN_IDS = [[2, 5, 6, 7, 3, 0], [2, 8, 25, 3, 0, 0]]  # two padded rows of VOCAB's ids, for a forward by hand


def sentences(target: str = "has_cat", n: int = 200, seed: int = 0):
    """Short sentences of WORDS; `has_cat`: whether "cat" is in one, `parity`: its number of words."""
    rng = np.random.RandomState(seed)
    texts, labels = [], []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=rng.randint(3, 9)))
        texts.append(" ".join(words))
        labels.append(int("cat" in words) if target == "has_cat" else len(words) % 2)
    return np.array(texts, dtype=object), np.array(labels)
