"""Sparse sharing over the whole shared network (`scheme.prune_encoders`): the slides' subnetworks
E(x; M_t * theta_E) cover the shared encoders as well as the body, each task's encoder mask found by
the same IMP rounds, at the body's rate but ranked by a threshold of their own."""

import pytest
import torch
from safetensors.numpy import load_file

from helpers import TINY, tiny_config
from lsmn.cli import main
from lsmn_core.store import routing
from lsmn_core.network.layers import ENCODER_LAYER
from lsmn_core.data.loading import load_tasks
from lsmn_core.store.export import load_export
from lsmn_core.schemes import build_model
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train

PRUNED = {**TINY["scheme"], "prune_encoders": True}
MIXED = [*TINY["tasks"][:2], {"name": "kang0", "dataset": "kang_synthetic", "target": "0", "domain": "clean"}]


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    return open_run(train(tiny_config(scheme=PRUNED), tmp_path_factory.mktemp("encoders"), quiet=True))


def test_each_task_sees_only_the_encoders_it_reads_through_masks_of_its_own():
    config = tiny_config(scheme=PRUNED, tasks=MIXED)
    model = build_model([d.spec for d in load_tasks(config.tasks, config.data)], config)
    masks = model.masks()
    image = {n: m for n, m in masks.items() if n.startswith("encoders.image")}
    vector = {n: m for n, m in masks.items() if n.startswith("encoders.vector")}
    assert image and vector and {n for n in masks if not n.startswith("encoders.")} == {
        f"body.{n}" for n, _ in model.body.named_parameters() if model.body.prunable(n)}
    for mask in image.values():  # the digit tasks read the image encoder, kang0 the vector one
        assert mask[:2].all() and not mask[2].any()
    for mask in vector.values():
        assert not mask[:2].any() and mask[2].all()
    assert not model.encoders["vector_20"].project.bias.dim() >= 2  # biases are never pruned
    usage = model.usage(2)
    assert not any(usage[n].any() for n in image) and all(usage[n].all() for n in vector)


def test_a_weight_outside_a_task_s_encoder_mask_never_enters_its_function():
    config = tiny_config(scheme=PRUNED)
    model = build_model([d.spec for d in load_tasks(config.tasks, config.data)], config).eval()
    name = "encoders.image_8x8.project.weight"
    mask = torch.ones_like(model.masks()[name])
    mask[0, :, :100] = False  # task 0 does not use the first 100 inputs of the projection
    model.body.load_routing({"masks": {**{n.removeprefix("body."): m for n, m in model.masks().items()},
                                       name: mask}})
    x = torch.rand(5, 8, 8)
    before = [model(x, t) for t in range(3)]
    with torch.no_grad():
        model.encoders["image_8x8"].project.weight[:, :100] += 1.0
    after = [model(x, t) for t in range(3)]
    assert torch.equal(before[0], after[0])
    assert not torch.equal(before[1], after[1]) and not torch.equal(before[2], after[2])


def test_imp_prunes_the_encoder_with_the_body(encoder_run):
    masks = encoder_run.masks()
    encoder = [n for n in masks if n.startswith("encoders.")]
    assert encoder
    summary = encoder_run.summary()
    arrays = load_file(encoder_run.path / "routing.safetensors")  # every round's masks, beside the chosen ones
    for t, task in enumerate(encoder_run.task_names):
        last = {n: routing.unpack(arrays[f"rounds.{task}.{n}"], [arrays[f"rounds.{task}.{n}"].shape[0],
                                                                 *masks[n].shape[1:]])[-1] for n in masks}
        read = [n for n in encoder if masks[n][t].any()]  # the encoder this task reads
        kept, body = (sum(last[n].sum() for n in part) / sum(last[n].size for n in part)
                      for part in (read, [n for n in masks if not n.startswith("encoders.")]))
        assert 0 < kept < 1, (task, kept)  # the last round pruned the encoder too
        assert abs(kept - body) < 0.01, (task, kept, body)  # at the body's rate, by a threshold of its own
        chosen = summary["search"]["pruning"][task]["chosen"]
        density = next(r["density"] for r in summary["search"]["pruning"][task]["rounds"] if r["round"] == chosen)
        every = sum(masks[n][t].sum() for n in masks) / sum(masks[n][t].size for n in masks)
        assert abs(every - density) < 1e-9  # the rounds' densities count the encoder's weights too
    doc = encoder_run.routing()[0]
    assert all(name in doc["masks"] for name in encoder)


def test_encoder_masks_are_edited_evaluated_exported_and_shown(encoder_run, tmp_path, capsys):
    doc, arrays = encoder_run.routing()
    edited = routing.edit_masks(doc, arrays, {("digit", ENCODER_LAYER): "clear"})
    for name, entry in doc["masks"].items():
        mask = routing.unpack(edited[entry["key"]], entry["shape"])
        assert (not mask[0].any()) if name.startswith("encoders.") else (
            mask == routing.unpack(arrays[entry["key"]], entry["shape"])).all()
    assert main(["export", str(encoder_run.path), "--out", str(tmp_path / "export.safetensors")]) == 0
    model, exported = encoder_run.load_model(), load_export(tmp_path / "export.safetensors")
    x = torch.rand(6, 8, 8)
    for t in range(len(encoder_run.task_names)):
        assert torch.equal(model(x, t), exported(x, t))
    assert main(["show", str(encoder_run.path), "--json"]) == 0
    assert '"layer": -1' in capsys.readouterr().out  # the encoder's overlap, before block 0
