"""Pretraining the Studio's own image checkpoint (lsmn_core.pretrained.fashion_conv): FashionConv and
a linear classifier trained on Fashion-MNIST's training images; the network's weights (not the
classifier's) are written as safetensors beside its class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from lsmn_core.datasets import fashion_mnist
from lsmn_core.pretrained.fashion_conv import WEIGHTS, FashionConv
from lsmn_core.store.files import atomic_write


def pretrain_fashion_conv(out: Path = WEIGHTS, steps: int = 1500, batch: int = 128, seed: int = 0) -> dict:
    """Train FashionConv on Fashion-MNIST's ten classes; write its weights to `out`; returns its test
    accuracy (the published test set) and what it was trained with."""
    torch.manual_seed(seed)
    images, labels = (torch.from_numpy(a) for a in fashion_mnist.split("train"))
    test_images, test_labels = (torch.from_numpy(a) for a in fashion_mnist.split("test"))
    network, classifier = FashionConv(), nn.Linear(32, 10)
    optimizer = torch.optim.AdamW([*network.parameters(), *classifier.parameters()], lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(labels), (batch,), generator=generator)
        loss = F.cross_entropy(classifier(network(images[rows])), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    network.eval()
    with torch.no_grad():
        predicted = torch.cat([classifier(network(test_images[i:i + 1000])).argmax(-1)
                               for i in range(0, len(test_labels), 1000)])
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    atomic_write(Path(out), lambda tmp: save_file(state, tmp))
    return {"weights": str(out), "test_accuracy": float((predicted == test_labels).float().mean()),
            "steps": steps, "batch": batch, "seed": seed,
            "parameters": int(np.sum([p.numel() for p in network.parameters()]))}
