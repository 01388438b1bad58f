"""Pretrained networks: a checkpoint (tiny random models of three families, made with
save_pretrained; a user's module with a weights file) opened under every scheme that works on one,
a run storing only what it made, text read through the checkpoint's tokenizer and cached, exports
that transformers loads, and every bad checkpoint refused in one line before anything loads."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import REPO, spec_of
from lsmn.cli import main
from lsmn_core.config import DataConfig, TaskConfig, load_config, parse_config
from lsmn_core.data.loading import load_task
from lsmn_core.data.tasks import IGNORE
from lsmn_core.data.text import Tokenization
from lsmn_core.errors import ConfigError, DataError
from lsmn_core.pretrained.checkpoint import find_layers, find_targets, module_kind
from lsmn_core.pretrained.network import PretrainedNet, open_source
from lsmn_core.schemes.sparse.pretrained import thresholded
from lsmn_core.store.runs import DATA_CACHE, open_run
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.training.trainer import train
from tiny_models import SENTENCE_TASKS, TOKEN_IDS, hf_model, tokenizer, user_module

SCHEMES = {"independent": {}, "hard": {}, "hierarchical": {"depths": {"parity": 1}},
           "sparse": {"prune_rate": 0.5, "min_density": 0.3, "round_steps": 8},
           "learned": {"masks": "learned", "mask_steps": 12}, "lora": {"adapter": {"lora": {"rank": 4, "alpha": 8}}}}
KINDS = {"learned": "sparse", "lora": "independent"}  # the entries of SCHEMES that are options of another kind



def text_config(folder: Path, scheme: str, **model) -> dict:
    options = SCHEMES[scheme]
    return {"name": f"text-{scheme}", "seed": 0, "tasks": SENTENCE_TASKS,
            "model": {"pretrained": {"hf": str(folder)}, **model},
            "scheme": {"kind": KINDS.get(scheme, scheme), **options},
            "train": {"steps": 16, "eval_every": 8, "batch_size": 16, "device": "cpu"}}


@pytest.mark.parametrize("family, layers, per_layer, kinds", [
    ("bert", "encoder.layer", 6, {"query", "key", "value", "attention output", "feed-forward in", "feed-forward out"}),
    ("distilbert", "transformer.layer", 6, {"query", "key", "value", "attention output", "feed-forward in",
                                             "feed-forward out"}),
    ("gpt2", "h", 4, {"query-key-value", "attention output", "feed-forward in", "feed-forward out"})])
def test_three_families_layers_and_targets_are_found(tmp_path, family, layers, per_layer, kinds):
    folder = hf_model(tmp_path / family, family)
    config = parse_config(text_config(folder, "hard"))
    checkpoint, source = open_source(config, weights=True)
    assert source.layers == layers and source.depth == 2 and source.width == 32
    assert len(source.targets) == 2 * per_layer and {module_kind(n) for n in source.targets} == kinds
    assert set(source.target_layers.values()) == {0, 1}
    assert source.files == {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.glob("*.safetensors")}
    path, found = find_layers(checkpoint.module, None)
    picked = find_targets(path, found, ["attention.output.dense", "*.intermediate.dense.weight"]) \
        if family == "bert" else None
    if picked is not None:
        assert {module_kind(n) for n in picked} == {"attention output", "feed-forward in"} and len(picked) == 4
    with pytest.raises(ConfigError, match="model.targets: 'nothing' matches no linear or convolution weight"):
        find_targets(path, found, ["nothing"])
    embeddings = "wte" if family == "gpt2" else "embeddings"
    with pytest.raises(ConfigError, match=rf"model.layers: '{embeddings}' is a .*, not a module list; candidates: "
                                          rf"{layers} \(2 x "):
        find_layers(checkpoint.module, embeddings)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_on_a_checkpoint_trains_and_stores_only_what_it_made(bert, tmp_path, scheme):
    run = open_run(train(parse_config(text_config(bert, scheme)), tmp_path / "runs", quiet=True))
    assert run.status == "done" and run.scheme == KINDS.get(scheme, scheme)
    record = run.meta["pretrained"]
    weights = bert / "model.safetensors"
    assert record["files"] == {str(weights): hashlib.sha256(weights.read_bytes()).hexdigest()}
    stored = set(safetensors_keys(run.path / "model.safetensors"))
    own = dict(open_source(run.config(), weights=True)[0].module.named_parameters())
    assert stored and all(k.startswith(("body.", "heads.")) for k in stored)  # never a checkpoint's weight
    assert not any(k.removeprefix("body.") in own for k in stored)
    model = run.load_model()
    assert isinstance(model, PretrainedNet)
    evaluated = evaluate_run(run, device="cpu")["metrics"]
    assert all(abs(m["test_delta"]) < 1e-6 for m in evaluated.values())  # the stored run gives its metrics again
    assert all(torch.equal(own[n], p) for n, p in model.pretrained().items())  # the checkpoint is never changed
    assert (model.features_together(TWO_BATCHES, [0, 1]) is None) == (scheme == "hierarchical")  # it reads a layer
    together, in_turn = (outputs_and_gradients(model, way) for way in ("together", "in turn"))
    for a, b in zip(together, in_turn, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    doc, _, masks = run.checked_routing()
    if scheme in ("sparse", "learned"):
        assert set(masks) == set(record["targets"])
        entries = doc["masks"].values()
        assert {e["layer"] for e in entries} == {0, 1} and "query" in {e["group"] for e in entries}
        assert ("body.deltas." + next(iter(masks)).replace(".", "__") in stored) == (scheme == "sparse")
    if scheme == "sparse":
        rounds = run.summary()["search"]["pruning"]["cat"]["rounds"]
        assert [round(r["density"], 3) for r in rounds] == [1.0, 0.5, 0.25]
    if scheme == "independent":
        shapes = safetensors_shapes(run.path / "model.safetensors")
        assert all(shape[0] == 2 for k, shape in shapes.items() if k.startswith("body."))  # a delta per task


TWO_BATCHES = torch.tensor([TOKEN_IDS, TOKEN_IDS[::-1]])  # [tasks, rows, L]: each task's own rows


def outputs_and_gradients(model: PretrainedNet, way: str) -> list[torch.Tensor]:
    """Both tasks' outputs on their rows of TWO_BATCHES, from one call of the checkpoint on all rows
    (forward_tasks) or from each task's network in turn, then the gradients of the scheme's own parameters."""
    model.eval().zero_grad()
    if way == "together":
        outputs = model.forward_tasks(TWO_BATCHES, [0, 1])
    else:
        outputs = [model.heads[s.name](*model.features(TWO_BATCHES[t], t)) for t, s in enumerate(model.specs)]
    sum(out.pow(2).sum() for out in outputs).backward()
    return [out.detach() for out in outputs] + [p.grad for p in model.body.parameters() if p.grad is not None]


def safetensors_keys(path: Path) -> list[str]:
    return list(safetensors_shapes(path))


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def test_learned_masks_pass_the_gradient_straight_through_the_threshold():
    scores = torch.tensor([0.001, 0.004, 0.006, 0.02], requires_grad=True)
    mask = thresholded(scores, 0.005)
    assert mask.tolist() == [0.0, 0.0, 1.0, 1.0]
    (mask * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert scores.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_a_run_whose_checkpoint_is_gone_or_changed_still_shows_what_it_stored(bert, tmp_path, capsys):
    folder = tmp_path / "bert"
    shutil.copytree(bert, folder)
    run = open_run(train(parse_config(text_config(folder, "sparse")), tmp_path / "runs", quiet=True))
    folder.rename(tmp_path / "moved")
    assert main(["show", str(run.path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["metrics"]) == {"cat", "parity"} and "overlap" in shown  # masks need no checkpoint
    assert main(["eval", str(run.path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a Hugging Face model folder" in error and str(folder) in error
    (tmp_path / "moved").rename(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert main(["eval", str(run.path)]) == 2
    assert "is not the one this run was made from" in capsys.readouterr().err


def test_export_writes_a_task_s_network_that_transformers_loads(bert, tmp_path, capsys):
    from transformers import AutoModel

    run = open_run(train(parse_config(text_config(bert, "independent")), tmp_path / "runs", quiet=True))
    out = tmp_path / "parity-network"
    assert main(["export", str(run.path), "--task", "parity", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    written = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "lsmn-head.safetensors", "lsmn-head.json"} <= written
    exported = AutoModel.from_pretrained(out, local_files_only=True).eval()
    model = run.load_model().eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 3, 0, 0, 0]])
    with torch.no_grad():
        ours, _ = model.features(ids, 1)
        theirs = exported(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert main(["export", str(run.path), "--task", "parity", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err  # an existing folder is never overwritten


def test_a_user_module_with_a_weights_file_serves_image_tasks(tmp_path):
    weights = user_module(tmp_path / "module")
    config = parse_config({"name": "user", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"},
                                                     {"name": "parity", "dataset": "digits", "target": "parity"}],
                           "model": {"pretrained": {"class": "tiny_models:TinyConv", "weights": str(weights)}},
                           "scheme": {"kind": "sparse", "prune_rate": 0.5, "min_density": 0.5, "round_steps": 5},
                           "train": {"steps": 10, "eval_every": 5, "device": "cpu"}})
    run = open_run(train(config, tmp_path / "runs", quiet=True))
    assert run.meta["pretrained"]["layers"] == "blocks" and len(run.masks()) == 2 + 0  # two conv blocks' weights
    assert run.load_model().module_count(0) == 2


def test_text_is_tokenized_once_and_a_tagging_label_goes_to_the_first_sub_word(tmp_path):
    words = tokenizer(tmp_path / "tok")
    calls = []

    class Counted:
        def __getattr__(self, name):
            return getattr(words, name)

        def __len__(self):
            return len(words)

        def __call__(self, *args, **kwargs):
            calls.append(1)
            return words(*args, **kwargs)

    reader = Tokenization(Counted(), 16, tmp_path / "cache")
    reader.encode(["a first call sets the tokenizer's truncation and padding"], None)  # not part of its identity
    calls.clear()
    frame = tmp_path / "texts.csv"
    frame.write_text("text,label\n" + "".join(f"the cat {'a ' * (i % 4)}dog,{i % 2}\n" for i in range(40)))
    task = TaskConfig(name="t", file=str(frame), text="text", target="label")
    first = load_task(task, DataConfig(), reader)
    second = load_task(task, DataConfig(), Tokenization(Counted(), 16, tmp_path / "cache"))
    assert len(calls) == 3  # three splits tokenized once; the second load reads the cache
    assert first.spec.modality == "text" and first.spec.vocab == len(words) and first.spec.pad == 0
    assert all(np.array_equal(first.splits[s][0], second.splits[s][0]) for s in ("train", "dev", "test"))
    tagged = reader.encode([["cats", "dog"], ["the", "zzz"]], [np.array([1, 2]), np.array([3, 0])])
    ids, labels = tagged
    pieces = [words.convert_ids_to_tokens(row) for row in ids]
    assert pieces[0][:5] == ["[CLS]", "cat", "##s", "dog", "[SEP]"]
    assert labels[0][:5].tolist() == [IGNORE, 1, IGNORE, 2, IGNORE]  # "cats": its label on "cat" alone
    assert pieces[1][:6] == ["[CLS]", "the", "z", "##z", "##z", "[SEP]"]
    assert labels[1][:6].tolist() == [IGNORE, 3, 0, IGNORE, IGNORE, IGNORE]
    with pytest.raises(DataError, match="its inputs are text: give the run a tokenizer"):
        load_task(task, DataConfig())


def test_code_tokens_read_through_a_subword_tokenizer_keep_one_label_per_token(tmp_path):
    reader = Tokenization(tokenizer(tmp_path / "tok"), 48, None)
    data = load_task(TaskConfig(name="kind", dataset="code_tokens", target="kind", limit=20), DataConfig(), reader)
    x, y = data.splits["train"]
    assert data.spec.modality == "text" and data.spec.kind == "tagging" and x.shape[1] <= 48
    labelled = (y != IGNORE).sum(1)
    assert (labelled > 0).all() and (labelled < (x != 0).sum(1)).all()  # fewer labels than sub-words


@pytest.mark.parametrize("make, message", [
    (lambda f: f.mkdir(), "is not a Hugging Face model folder \\(no config.json\\)"),
    (lambda f: (hf_model(f), (f / "model.safetensors").unlink()), "holds no weights"),
    (lambda f: (hf_model(f), (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()),
                                                                        "auto_map": {"AutoModel": "x.Y"}}))),
     "needs remote code"),
    (lambda f: (hf_model(f), (f / "model.safetensors").unlink(),
                torch.save(torch.nn.Linear(2, 2), f / "pytorch_model.bin")), "needs code unpickled"),
    (lambda f: hf_model(f, with_tokenizer=False), "its inputs are text: give the run a tokenizer"),
])
def test_bad_checkpoints_are_refused_in_one_line_before_a_run_exists(tmp_path, capsys, make, message):
    folder = tmp_path / "model"
    make(folder)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(text_config(folder, "hard")))
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != DATA_CACHE]  # no run folder


def test_bad_user_modules_and_configs_are_refused_in_one_line(tmp_path, monkeypatch):
    weights = user_module(tmp_path / "module")
    state = {"stem.weight": torch.zeros(8, 1, 3, 3), "extra": torch.zeros(1)}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "wrong.safetensors"))
    base = {"name": "bad", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"}],
            "train": {"steps": 2, "device": "cpu"}}
    wrong = parse_config({**base, "model": {"pretrained": {"class": "tiny_models:TinyConv",
                                                           "weights": str(tmp_path / "wrong.safetensors")}}})
    with pytest.raises(ConfigError, match="does not fit tiny_models:TinyConv: missing 'blocks.0.0.bias', "
                                          "unexpected 'extra'"):
        open_source(wrong, weights=True)
    for kind in ("soft", "hyper"):
        with pytest.raises(ConfigError, match=f"the {kind} scheme does not work on a pretrained network yet "
                                              r"\(model.pretrained\); these do: .*mann.*mixture.*moe"):
            parse_config({**base, "model": {"pretrained": {"class": "tiny_models:TinyConv", "weights": str(weights)}},
                          "scheme": {"kind": kind}})
    with pytest.raises(ConfigError, match="learned masks \\(Piggyback\\) are for a pretrained network"):
        parse_config({**base, "scheme": {"kind": "sparse", "masks": "learned"}})
    with pytest.raises(ConfigError, match="give exactly one of the loaders class, hf"):
        parse_config({**base, "model": {"pretrained": {"onnx": "x"}}})
    monkeypatch.setattr("lsmn_core.pretrained.checkpoint.os.sysconf", lambda name: 16)  # 256 bytes of memory
    right = parse_config({**base, "model": {"pretrained": {"class": "tiny_models:TinyConv", "weights": str(weights)}}})
    with pytest.raises(ConfigError, match="its weights files hold .* more than this machine's"):
        open_source(right, weights=True)


def test_the_app_shows_a_pretrained_run(bert, tmp_path, monkeypatch):
    from helpers import open_each_page, start_app

    run = open_run(train(parse_config(text_config(bert, "sparse")), tmp_path / "runs", quiet=True))
    at = start_app(monkeypatch, run.path.parent)
    open_each_page(at, ["views/overview.py", "views/masks.py", "views/attributions.py", "views/edit.py"])
    at.switch_page("views/masks.py").run()
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    assert any("Density per kind of module" in s for s in specs) and any("encoder.layer" in s for s in specs)
    at.switch_page("views/attributions.py").run()
    assert any("[CLS]" in spec_of(c) for c in at.get("plotly_chart"))  # the tokenizer's tokens as labels


def test_the_shipped_fashion_checkpoint_is_pretrained_and_serves_low_data_digits(tmp_path):
    """Its features sort Fashion-MNIST's test images by class far better than the same network's
    random ones (nearest class mean), and configs/digits-fashion-conv.yaml trains on it."""
    from lsmn.pretraining import pretrain_fashion_conv
    from lsmn_core.datasets import fashion_mnist
    from lsmn_core.pretrained.fashion_conv import WEIGHTS, FashionConv
    from safetensors.torch import load_file

    images, labels = (torch.from_numpy(a) for a in fashion_mnist.split("test"))
    images, labels = images[:2000], labels[:2000]

    def nearest_mean_accuracy(network) -> float:
        with torch.no_grad():
            features = network.eval()(images)
        fit, held = slice(0, 1000), slice(1000, 2000)
        means = torch.stack([features[fit][labels[fit] == c].mean(0) for c in range(10)])
        return float((torch.cdist(features[held], means).argmin(-1) == labels[held]).float().mean())

    torch.manual_seed(0)
    pretrained = FashionConv()
    pretrained.load_state_dict(load_file(WEIGHTS))
    assert nearest_mean_accuracy(pretrained) > nearest_mean_accuracy(FashionConv()) + 0.1

    remade = pretrain_fashion_conv(tmp_path / "again.safetensors", steps=2, batch=8)
    assert set(load_file(remade["weights"])) == set(load_file(WEIGHTS)) and 0 <= remade["test_accuracy"] <= 1

    config = load_config(REPO / "configs" / "digits-fashion-conv.yaml",
                         ["train.steps=6", "train.eval_every=3", "train.device=cpu", "scheme.round_steps=3"])
    run = open_run(train(config, tmp_path / "runs", quiet=True))
    assert run.meta["pretrained"]["layers"] == "blocks" and len(run.meta["tasks"]) == 5
