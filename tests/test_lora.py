"""LoRA per task on a checkpoint, checked against peft: a task's adapter, exported as a peft folder,
gives over the checkpoint (loaded by transformers and peft alone) the features the Studio computes,
for linear targets (a tiny BERT) and convolution targets (a user's module); the adapters start as the
pretrained network; only they and the heads are stored; bad ranks are refused in one line."""

import json
import math
import re

import peft
import pytest
import torch
from safetensors.torch import load_file

from lsmn.cli import main
from lsmn_core.config import parse_config
from lsmn_core.errors import ConfigError
from lsmn_core.merges.ties import magnitude_level
from lsmn_core.pretrained.lora import LoraAdapters
from lsmn_core.schemes import build_model
from lsmn_core.store.runs import DATA_CACHE, open_run
from lsmn_core.training.trainer import train
from test_pretrained import safetensors_shapes, text_config
from tiny_models import TinyConv, user_module




@pytest.fixture(scope="module")
def lora_run(bert, tmp_path_factory):
    config = parse_config({**text_config(bert, "lora"), "train": {"steps": 24, "eval_every": 12, "batch_size": 16,
                                                                  "device": "cpu"}})
    return open_run(train(config, tmp_path_factory.mktemp("runs"), quiet=True))


def test_a_task_s_adapter_is_a_peft_folder_that_gives_the_studio_s_features(bert, lora_run, tmp_path, capsys):
    from transformers import AutoModel

    out = tmp_path / "parity"
    assert main(["export", str(lora_run.path), "--task", "parity", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    saved = json.loads((out / "peft-adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 8 and saved["base_model_name_or_path"] == str(bert)
    base = AutoModel.from_pretrained(bert, local_files_only=True)
    adapted = peft.PeftModel.from_pretrained(base, out / "peft-adapter").eval()
    assert sum(isinstance(m, peft.tuners.lora.Linear) for m in adapted.modules()) == 12  # 6 linears x 2 layers
    model = lora_run.load_model().eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 3, 0, 0, 0]])
    with torch.no_grad():
        ours = [model.features(ids, task)[0] for task in (0, 1)]
        theirs = adapted(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        pretrained = adapted.get_base_model()
        with adapted.disable_adapter():
            plain = pretrained(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    assert torch.allclose(ours[1], theirs, atol=1e-5)
    assert not torch.allclose(ours[0], theirs, atol=1e-3)  # the other task's adapter is another one
    assert not torch.allclose(theirs, plain, atol=1e-4)  # training moved the adapter


def test_adapters_start_at_the_checkpoint_and_only_they_and_the_heads_are_stored(bert, lora_run):
    from transformers import AutoModel

    shapes = safetensors_shapes(lora_run.path / "model.safetensors")
    body = {k: v for k, v in shapes.items() if k.startswith("body.")}
    assert body and all(k.startswith(("body.lora_A.", "body.lora_B.")) for k in body)
    key = "encoder__layer__0__intermediate__dense__weight"
    assert shapes[f"body.lora_A.{key}"] == [2, 4, 32] and shapes[f"body.lora_B.{key}"] == [2, 64, 4]
    record = lora_run.meta["pretrained"]
    per_task = sum(4 * (out + inputs) for out, inputs in record["targets"].values())  # rank x (in + out)
    heads = sum(math.prod(s) for k, s in shapes.items() if k.startswith("heads."))
    counts = lora_run.summary()["params"]
    assert counts["total"] == record["parameters"] + 2 * per_task + heads
    fresh = build_model(lora_run.specs, lora_run.config()).eval()  # B starts at zero: the checkpoint itself
    plain = AutoModel.from_pretrained(bert, local_files_only=True).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0]])
    with torch.no_grad():
        expected = plain(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        assert all(torch.allclose(fresh.features(ids, t)[0], expected, atol=1e-6) for t in (0, 1))


def test_a_convolution_s_adapter_matches_peft_s_conv_lora(tmp_path):
    weights = user_module(tmp_path / "module")
    config = parse_config({"name": "conv-lora", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"},
                                                          {"name": "parity", "dataset": "digits", "target": "parity"}],
                           "model": {"pretrained": {"class": "tiny_models:TinyConv", "weights": str(weights)}},
                           "scheme": {"kind": "independent", "adapter": {"lora": {"rank": 2, "alpha": 4}}},
                           "train": {"steps": 6, "eval_every": 3, "device": "cpu"}})
    run = open_run(train(config, tmp_path / "runs", quiet=True))
    model = run.load_model().eval()
    body = model.body
    assert isinstance(body, LoraAdapters)
    config_dict, adapter = body.peft_adapter(1, str(weights))
    module = TinyConv()
    module.load_state_dict(load_file(weights))
    lora = peft.LoraConfig(r=2, lora_alpha=4, target_modules=config_dict["target_modules"])
    adapted = peft.get_peft_model(module, lora)
    peft.set_peft_model_state_dict(adapted, adapter)
    x = torch.rand(3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.features(x, 1)[0], adapted(x), atol=1e-5)


@pytest.mark.parametrize("lora, targets, message", [
    ({"rank": 40}, None, r"scheme.adapter.lora.rank: rank 40 is larger than encoder.layer.0.attention.self.query"
                         r".weight's smaller side \(32 x 32: at most 32\)"),
    ({"rank": 0}, None, r"scheme.adapter.lora.rank: must be in 1 .. 65,536; got 0"),
    ({"rank": 2}, ["nothing"], r"model.targets: 'nothing' matches no linear or convolution weight"),
])
def test_bad_adapters_are_refused_in_one_line_before_a_run_exists(bert, tmp_path, capsys, lora, targets, message):
    config = text_config(bert, "lora", **({"targets": targets} if targets else {}))
    config["scheme"]["adapter"]["lora"] = lora
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != DATA_CACHE]


def test_an_adapter_needs_a_checkpoint():
    with pytest.raises(ConfigError, match="scheme.adapter: LoRA adapters are for a pretrained network"):
        parse_config({"name": "x", "tasks": [{"name": "digit", "dataset": "digits", "target": "digit"}],
                      "scheme": {"kind": "independent", "adapter": {"lora": {"rank": 2}}}})


def test_a_lora_run_imports_as_task_vectors_of_its_adapters(lora_run, tmp_path, capsys):
    assert main(["vectors", str(lora_run.path), "--density", "0.2", "--out", str(tmp_path)]) == 0
    vectors = open_run(capsys.readouterr().out.strip().splitlines()[-1])
    assert [i["lora_scaling"] for i in vectors.config().scheme.inputs] == [2.0, 2.0]  # alpha 8 / rank 4
    stored, masks = load_file(str(lora_run.path / "model.safetensors")), vectors.masks()
    flat = []
    for name in lora_run.meta["pretrained"]["targets"]:
        key = name.replace(".", "__")
        a, b = stored[f"body.lora_A.{key}"], stored[f"body.lora_B.{key}"]
        deltas = torch.stack([b[t] @ a[t] * 2.0 for t in range(2)])
        for t in range(2):
            expected = (deltas[t].abs() >= magnitude_level(deltas[t], 0.2)) & (deltas[t] != 0)
            assert torch.equal(torch.from_numpy(masks[name][t]), expected)
        flat.append(deltas.flatten(1))
    vector = torch.cat(flat, 1).double()
    cosine = torch.nn.functional.cosine_similarity(vector[0], vector[1], dim=0).item()
    assert math.isclose(vectors.summary()["vectors"]["cosine"][0][1], cosine, abs_tol=1e-6)
