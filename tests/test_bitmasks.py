"""Bit-packed masks in torch: numpy.packbits' layout, and what the masked schemes hold in memory."""

import numpy as np
import pytest
import torch

from helpers import tiny_config
from lsmn_core.network import bitmasks
from lsmn_core.data.loading import load_tasks
from lsmn_core.schemes import build_model


@pytest.mark.parametrize("shape", [(3, 1), (2, 7), (4, 8), (5, 9), (2, 3, 1001)])
def test_pack_is_numpys_packbits_and_unpack_reverses_it(shape):
    bits = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape))) < 0.4
    packed = bitmasks.pack(bits)
    assert packed.dtype == torch.uint8
    assert np.array_equal(packed.numpy(), np.packbits(bits.numpy(), axis=-1))
    assert torch.equal(bitmasks.unpack(packed, shape[-1]), bits)


@pytest.mark.parametrize("kind", ["sparse", "mann"])
def test_masked_schemes_hold_their_masks_bit_packed(kind):
    config = tiny_config(scheme={"kind": kind})
    model = build_model([d.spec for d in load_tasks(config.tasks, config.data)], config)
    body, n_tasks = model.body, len(config.tasks)
    weights = {name: p for name, p in body.named_parameters() if body.prunable(name)}
    buffers = dict(body.named_buffers())
    held = sum(b.nbytes for name, b in buffers.items() if name.startswith("mask__"))
    assert held == sum(n_tasks * -(-p.numel() // 8) for p in weights.values())  # 1 bit per weight and task
    masks = {name: torch.rand((n_tasks, *p.shape)) < 0.3 for name, p in weights.items()}
    body.load_routing({"masks": masks})
    assert all(torch.equal(body.mask_of(name), m) for name, m in masks.items())
    one = {name: ~m[1] for name, m in masks.items()}
    body.set_task_masks(1, one)
    assert all(torch.equal(body.task_masks(1)[name], one[name]) for name in masks)
    assert all(torch.equal(body.task_masks(0)[name], masks[name][0]) for name in masks)


@pytest.mark.parametrize("kind", ["sparse", "mann"])
def test_a_skeleton_on_the_meta_device_has_every_mask_s_shape_and_no_bits(kind):
    """A stored run's skeleton (routing checks, the app's first page) is built on the meta device:
    its packed and unpacked masks have the real model's shapes without computing any bit."""
    config = tiny_config(scheme={"kind": kind})
    specs = [d.spec for d in load_tasks(config.tasks, config.data)]
    real = build_model(specs, config)
    with torch.device("meta"):
        skeleton = build_model(specs, config)
    assert {n: m.shape for n, m in skeleton.masks().items()} == {n: m.shape for n, m in real.masks().items()}
    assert all(m.is_meta and m.dtype == torch.bool for m in skeleton.masks().values())
    packed = {n: b.shape for n, b in skeleton.body.named_buffers() if n.startswith("mask__")}
    assert packed == {n: b.shape for n, b in real.body.named_buffers() if n.startswith("mask__")}
    assert bitmasks.unpack(torch.empty(3, 2, dtype=torch.uint8, device="meta"), 13).shape == (3, 13)
