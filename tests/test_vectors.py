"""Task vectors end to end on a tiny random BERT: a Studio run of per-task fine-tunes imported
(`lsmn vectors RUN`) and the same fine-tunes as exported folders (`lsmn vectors BASE FT...`); what the
run stores, its masks and statistics against their definitions, a merge written by `lsmn merge`
that transformers loads and that equals its definition, the merge evaluated as the Studio evaluates
it, AdaMerging's learned coefficients, the app's pages, and bad input refused in one line."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from peft.utils import merge_utils
from safetensors.torch import load_file, save_file

from helpers import REPO, spec_of
from lsmn.cli import main
from lsmn_core.config import parse_config
from lsmn_core.errors import RoutingError
from lsmn_core.merges.matrix import top_triplets
from lsmn_core.merges.method import Recipe
from lsmn_core.merges.ties import magnitude_level
from lsmn_core.store import routing
from lsmn_core.schemes.vectors.writer import write_merge
from lsmn_core.store.runs import open_run
from lsmn_core.training.evaluation import evaluate_run
from lsmn_core.training.trainer import train
from test_matrix_merges import DEFINITIONS as MATRIX_MERGES
from tiny_models import hf_model

TASKS = [{"name": "cat", "source": "tiny_models:sentences", "args": {"target": "has_cat"}},
         {"name": "parity", "source": "tiny_models:sentences", "args": {"target": "parity", "seed": 1}},
         {"name": "dog", "source": "tiny_models:sentences", "args": {"target": "has_dog", "seed": 2}}]


@pytest.fixture(scope="module")
def finetunes(tmp_path_factory):
    """A tiny BERT, a run of a fine-tune per task over it, and that run imported as task vectors."""
    folder = tmp_path_factory.mktemp("vectors")
    bert = hf_model(folder / "bert")
    config = {"name": "tiny", "seed": 0, "tasks": TASKS,
              "model": {"pretrained": {"hf": str(bert)}, "finetune_lr_scale": 1.0},
              "scheme": {"kind": "independent"},
              "train": {"steps": 40, "eval_every": 20, "batch_size": 16, "lr": 0.003, "device": "cpu"}}
    parent = open_run(train(parse_config(config), folder / "runs", quiet=True))
    assert main(["vectors", str(parent.path), "--density", "0.2"]) == 0
    vectors = open_run(next(p for p in (folder / "runs").iterdir() if p.name.startswith("tiny-vectors")))
    return bert, parent, vectors


def parent_deltas(parent) -> dict[str, torch.Tensor]:
    """The parent run's deltas by target name, [tasks, ...]."""
    stored = load_file(str(parent.path / "model.safetensors"))
    return {name: stored[f"body.deltas.{name.replace('.', '__')}"] for name in parent.meta["pretrained"]["targets"]}


def exported(parent, tasks: list[str], folder):
    """The parent run's fine-tunes of `tasks` as folders (`lsmn export --task`) in `folder`, and a data
    config naming their tasks."""
    folders = []
    for task in tasks:
        folders.append(folder / task)
        assert main(["export", str(parent.path), "--task", task, "--out", str(folders[-1])]) == 0
    data = folder / "data.yaml"
    data.write_text(json.dumps({"name": "data", "tasks": TASKS}))
    return folders, data


def test_the_run_stores_masks_and_statistics_never_the_weights(finetunes):
    _, parent, vectors = finetunes
    assert vectors.scheme == "vectors" and vectors.task_names == ["cat", "parity", "dog"]
    stored = load_file(str(vectors.path / "model.safetensors"))
    assert all(k.startswith("heads.") or k == "body.coefficients" for k in stored)  # no delta, no checkpoint weight
    inputs = vectors.config().scheme.inputs
    assert [i["index"] for i in inputs] == [0, 1, 2] and all(len(i["files"]) == 1 for i in inputs)
    deltas, masks = parent_deltas(parent), vectors.masks()
    assert set(masks) == set(deltas)
    for name, delta in deltas.items():
        for t in range(3):
            level = magnitude_level(delta[t], 0.2)
            assert torch.equal(torch.from_numpy(masks[name][t]), (delta[t].abs() >= level) & (delta[t] != 0))
    stats = vectors.summary()["vectors"]
    flat = torch.cat([d.flatten(1) for d in deltas.values()], 1).double()
    expected = torch.nn.functional.cosine_similarity(flat[:, None], flat[None, :], dim=-1)
    assert torch.allclose(torch.tensor(stats["cosine"], dtype=torch.float64), expected, atol=1e-6)
    name = next(iter(deltas))  # sign conflicts of one tensor, written out
    kept = torch.from_numpy(masks[name]).flatten(1)
    signs = torch.sign(deltas[name].flatten(1)) * kept
    shared = kept.sum(0) >= 2
    conflict = shared & (signs > 0).any(0) & (signs < 0).any(0)
    assert math.isclose(stats["sign_conflicts_per_tensor"][name], conflict.sum().item() / max(1, shared.sum().item()))
    assert len(stats["norms"]) == 3 and len(stats["sign_conflicts"]) == len(stats["layers"])


def test_the_run_measures_the_singular_interference_of_each_weight_matrix_and_show_reports_it(finetunes, capsys):
    from lsmn_core.schemes.vectors.statistics import singular_interference

    _, parent, vectors = finetunes
    stats = vectors.summary()["vectors"]
    deltas = parent_deltas(parent)
    matrices = [name for name, delta in deltas.items() if delta.dim() == 3]
    assert matrices and set(stats["singular_per_tensor"]) == set(matrices)
    name = matrices[0]
    total, pairwise, _ = singular_interference(deltas[name])
    assert stats["singular_per_tensor"][name] == pytest.approx(total, rel=1e-6) and total > 0
    per_layer = torch.tensor(stats["singular_pairwise_per_layer"])
    assert per_layer.shape == (len(stats["layers"]), 3, 3) and torch.allclose(per_layer, per_layer.transpose(1, 2))
    assert torch.allclose(per_layer.sum(0), torch.tensor(stats["singular_pairwise"], dtype=per_layer.dtype))
    energy = torch.tensor(stats["low_rank_energy"])
    assert energy.shape == (3, len(stats["layers"])) and ((energy > 0) & (energy <= 1 + 1e-9)).all()
    assert main(["show", str(vectors.path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["interference"]
    assert shown[name] == {"sign_conflicts": stats["sign_conflicts_per_tensor"][name],
                           "singular": stats["singular_per_tensor"][name]}


def test_the_individual_fine_tunes_evaluate_to_their_run_s_metrics(finetunes):
    _, parent, vectors = finetunes
    again = evaluate_run(vectors)["metrics"]
    for task, m in parent.summary()["metrics"].items():
        assert again[task]["test"] == pytest.approx(m["test"], abs=1e-6)
        assert vectors.summary()["metrics"][task]["test"] == m["test"]


def test_a_merge_is_written_as_its_definition_and_transformers_loads_it(finetunes, tmp_path, capsys):
    from transformers import AutoModel

    bert, parent, vectors = finetunes
    out = tmp_path / "ties"
    assert main(["merge", str(vectors.path), "--method", "ties", "--density", "0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out) and printed[1].split()[:3] == ["task", "metric", "individual"]
    assert printed[0].startswith("peak memory, estimated: ") and "(evaluation " in printed[0]  # before it starts
    evaluation = json.loads((out / "lsmn-evaluation.json").read_text())
    assert set(evaluation["tasks"]) == {"cat", "parity", "dog"}
    merged = AutoModel.from_pretrained(out, local_files_only=True)
    base = dict(AutoModel.from_pretrained(bert, local_files_only=True).named_parameters())
    for name, delta in parent_deltas(parent).items():
        expected = base[name] + merge_utils.ties(list(delta), torch.ones(3), 0.3)
        assert torch.allclose(dict(merged.named_parameters())[name], expected, atol=1e-6), name
    untouched = "embeddings.word_embeddings.weight"  # not a target: the checkpoint's own
    assert torch.equal(dict(merged.named_parameters())[untouched], base[untouched])
    assert set(load_file(str(out / "lsmn-heads.safetensors"))) == {k for k in load_file(
        str(vectors.path / "model.safetensors")) if k.startswith("heads.")}
    # the Studio's own evaluation of the recipe is the written network's
    doc = {**vectors.routing()[0], "recipe": {"method": "ties", "lambda": 1.0, "density": 0.3}}
    model = vectors.load_model()
    routing.apply(model, routing.decode(doc, vectors.routing()[1], model))
    with torch.no_grad():
        ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 3, 0, 0, 0]])
        ours, _ = model.eval().features(ids, 2)
        theirs = merged.eval()(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("method", ["tsv_m", "iso_cts"])
def test_lsmn_merge_writes_a_matrix_merge_of_a_tiny_bert_s_fine_tunes_as_its_definition(finetunes, tmp_path, method):
    """base + lambda x the definition, for every target of the tiny BERT's fine-tunes (its 2-D attention
    weights), read back with transformers."""
    from transformers import AutoModel

    bert, parent, vectors = finetunes
    out = tmp_path / method
    assert main(["merge", str(vectors.path), "--method", method, "--lambda", "0.8", "--out", str(out)]) == 0
    merged = dict(AutoModel.from_pretrained(out, local_files_only=True).named_parameters())
    base = dict(AutoModel.from_pretrained(bert, local_files_only=True).named_parameters())
    for name, delta in parent_deltas(parent).items():
        assert delta.dim() == 3, name
        expected = base[name].double().detach().numpy() + 0.8 * MATRIX_MERGES[method](delta.double().numpy())
        assert np.allclose(merged[name].detach().numpy(), expected, atol=1e-5), name
    excluded = tmp_path / f"{method}-excluded"  # one layer's matrices taken out of the SVD path: their mean
    assert main(["merge", str(vectors.path), "--method", method, "--lambda", "0.8", "--exclude", "*.layer.0.*",
                 "--out", str(excluded), "--no-eval"]) == 0
    merged = dict(AutoModel.from_pretrained(excluded, local_files_only=True).named_parameters())
    for name, delta in parent_deltas(parent).items():
        by = (lambda d: d.mean(0).numpy()) if ".layer.0." in name else MATRIX_MERGES[method]
        expected = base[name].double().detach().numpy() + 0.8 * by(delta.double())
        assert np.allclose(merged[name].detach().numpy(), expected, atol=1e-5), name


def test_tsv_c_writes_a_task_s_network_rebuilt_from_the_numbers_it_stores(finetunes, tmp_path, capsys,
                                                                          monkeypatch):
    """Every task's top floor(r / T) triplets of each weight stored beside the network, each weight
    decomposed once for them; the task's network is the checkpoint plus its delta rebuilt from them, bit for
    bit, and so is the network the Studio evaluates; the share of the task vectors' numbers they are
    is printed."""
    from transformers import AutoModel

    import lsmn_core.merges.tsv_compress as tsv_compress
    from test_matrix_merges import tsv_c

    decomposed = []
    monkeypatch.setattr(tsv_compress, "top_triplets",
                        lambda deltas, k: decomposed.append(deltas.shape) or top_triplets(deltas, k))
    bert, parent, vectors = finetunes
    out = tmp_path / "tsv_c"
    assert main(["merge", str(vectors.path), "--method", "tsv_c", "--task", "parity", "--out", str(out)]) == 0
    assert len(decomposed) == 2 * len(parent_deltas(parent))  # each matrix once to write, once to evaluate
    printed = capsys.readouterr().out
    stored = load_file(str(out / "lsmn-compressed.safetensors"))
    merged = dict(AutoModel.from_pretrained(out, local_files_only=True).named_parameters())
    base = dict(AutoModel.from_pretrained(bert, local_files_only=True).named_parameters())
    doc = {**vectors.routing()[0], "recipe": {"method": "tsv_c", "lambda": 1.0}}
    model = vectors.load_model()
    routing.apply(model, routing.decode(doc, vectors.routing()[1], model))
    with torch.no_grad():
        evaluated = model.body.task_weights(1, {name: base[name].detach() for name in model.body.targets})
    numbers = whole = 0
    for name, delta in parent_deltas(parent).items():
        m, n = delta.shape[1:]
        k = min(m, n) // 3
        own = {task: (lambda u, s, vt: (u * s) @ vt)(*(stored[f"{task}/{name}/{part}"] for part in ("u", "s", "vt")))
               for task in ("cat", "parity", "dog")}
        assert stored[f"parity/{name}/u"].shape == (m, k)
        assert np.allclose(torch.stack(list(own.values())).numpy(), tsv_c(delta.double().numpy(), k), atol=1e-5)
        assert torch.equal(merged[name], base[name] + own["parity"]), name
        assert torch.equal(evaluated[name], base[name].detach() + own["parity"]), name
        numbers, whole = numbers + 3 * k * (m + n + 1), whole + 3 * m * n
    assert f"{numbers / whole:.1%} of the task vectors' numbers" in printed
    assert json.loads((out / "lsmn-merge.json").read_text())["stored"]["share"] == pytest.approx(numbers / whole)
    assert set(json.loads((out / "lsmn-evaluation.json").read_text())["tasks"]) == {"cat", "parity", "dog"}


def test_writing_a_merge_reports_each_tensor_of_each_stage_and_the_cli_shows_it(finetunes, tmp_path, capsys):
    """A compression writes each task's numbers (one step per target) and then the network (one per
    tensor of the checkpoint's file), each stage counted up to its total; `lsmn merge` draws a bar
    per stage on stderr."""
    bert, parent, vectors = finetunes
    heard: dict[str, list[tuple[int, int]]] = {}
    write_merge(vectors, Recipe("tsv_c", 1.0), tmp_path / "compressed", "parity",
                lambda stage, done, total: heard.setdefault(stage, []).append((done, total)))
    keys, targets = len(load_file(str(bert / "model.safetensors"))), len(parent_deltas(parent))
    assert heard == {"each task's numbers": [(d, targets) for d in range(1, targets + 1)],
                     "the network": [(d, keys) for d in range(1, keys + 1)]}
    assert main(["merge", str(vectors.path), "--method", "ties", "--out", str(tmp_path / "ties"), "--no-eval"]) == 0
    assert "writing the network" in capsys.readouterr().err


def test_a_merge_cut_short_leaves_nothing_and_never_touches_a_folder_named_like_its_partial(finetunes, tmp_path,
                                                                                             monkeypatch):
    import lsmn_core.schemes.vectors.writer as writer

    bert, parent, vectors = finetunes
    mine = tmp_path / ".merged.partial"  # the name the writer's folder once had
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's")

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "stream_merge", cut_short)
    with pytest.raises(KeyboardInterrupt):
        write_merge(vectors, Recipe("tsv_c", 1.0), tmp_path / "merged", "parity")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".merged.partial"]
    assert (mine / "notes.txt").read_text() == "a user's"


def test_lambda_auto_picks_the_best_mean_normalised_dev_metric_of_the_sweep(finetunes, tmp_path, capsys):
    """0.1 to 3.0 in steps of 0.1, each merge evaluated on dev only; the chosen lambda is the sweep's best,
    each point is the merge at that lambda (checked at two of them), and the sweep is recorded."""
    from lsmn_core.merges.method import Recipe
    from lsmn_core.schemes.vectors.evaluation import LAMBDAS, recipe_routing

    _, _, vectors = finetunes
    out = tmp_path / "auto"
    assert main(["merge", str(vectors.path), "--method", "task_arithmetic", "--lambda", "auto", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    result = json.loads((out / "lsmn-evaluation.json").read_text())
    sweep = result["lambda_sweep"]
    assert [row["lambda"] for row in sweep] == list(LAMBDAS) == [round(0.1 * i, 1) for i in range(1, 31)]
    best = max(sweep, key=lambda row: row["dev_normalised"])
    assert result["lambda"] == best["lambda"] and f"lambda auto: {best['lambda']:.1f}" in printed.out
    assert printed.err.count("mean normalised dev") == 30  # progress, one line per lambda
    individual = vectors.summary()["metrics"]
    for row in (sweep[0], sweep[-1]):
        merged = evaluate_run(vectors, recipe_routing(vectors, Recipe("task_arithmetic", row["lambda"])))["metrics"]
        expected = sum(m["dev"] / individual[t]["dev"] for t, m in merged.items()) / len(merged)
        assert row["dev_normalised"] == pytest.approx(expected, abs=1e-9)


def test_a_random_merge_is_evaluated_at_three_seeds_and_its_spread_shown(finetunes, tmp_path, capsys):
    """DARE at seed 5 (the merge written), 6 and 7: each seed's metric is that seed's merge, the spread is
    the largest minus the smallest, and the table gives it beside the normalised metric."""
    from lsmn_core.merges.method import Recipe
    from lsmn_core.schemes.vectors.evaluation import evaluate_merge

    _, _, vectors = finetunes
    out = tmp_path / "dare"
    assert main(["merge", str(vectors.path), "--method", "dare", "--density", "0.5", "--seed", "5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads((out / "lsmn-evaluation.json").read_text())
    spread = result["seed_spread"]
    assert spread["seeds"] == [5, 6, 7] and "spread, 3 seeds" in printed[1]
    again = evaluate_merge(vectors, Recipe("dare", 0.3, density=0.5, seed=6))
    for task, row in spread["tasks"].items():
        assert row["per_seed"][0] == result["tasks"][task]["merged"]  # the written merge's own seed first
        assert row["per_seed"][1] == pytest.approx(again["tasks"][task]["merged"])
        assert row["spread"] == pytest.approx(max(row["per_seed"]) - min(row["per_seed"]))
    assert json.loads((out / "lsmn-merge.json").read_text())["recipe"]["seed"] == 5


def test_fine_tune_folders_import_as_the_run_s_own_vectors(finetunes, tmp_path, capsys):
    """The same fine-tunes, exported as folders (`lsmn export --task`) and imported with the checkpoint:
    every tensor's vector (zero off the targets), each task's metrics as its run's."""
    bert, parent, _ = finetunes
    folders, data = exported(parent, parent.task_names, tmp_path)
    capsys.readouterr()
    assert main(["vectors", str(bert), *map(str, folders), "--data", str(data), "--out", str(tmp_path / "runs")]) == 0
    run = open_run(capsys.readouterr().out.strip().splitlines()[-1])
    assert run.config().scheme.everywhere and "embeddings.word_embeddings.weight" in run.masks()
    for task, m in parent.summary()["metrics"].items():
        assert run.summary()["metrics"][task]["test"] == pytest.approx(m["test"], abs=1e-6)


def test_a_fine_tune_whose_vocabulary_grew_is_named_or_merged_on_the_checkpoint_s_rows(finetunes, tmp_path, capsys):
    """A fine-tune with 3 tokens added to its embeddings: refused naming the tensor, both shapes and the
    added rows; with --vocab base its vector is the checkpoint's rows', the merge says what it leaves
    out and writes the checkpoint's vocabulary."""
    bert, parent, _ = finetunes
    folders, data = exported(parent, parent.task_names[:2], tmp_path)
    weights, key = folders[1] / "model.safetensors", "embeddings.word_embeddings.weight"
    state = load_file(str(weights))
    rows = state[key].shape[0]
    state[key] = torch.cat([state[key], torch.randn(3, state[key].shape[1])])
    save_file(state, str(weights))
    capsys.readouterr()
    command = ["vectors", str(bert), *map(str, folders), "--data", str(data), "--out", str(tmp_path / "r")]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{key!r} is [{rows + 3}, 32], the checkpoint's [{rows}, 32]: its tokenizer " \
                                       "grew by 3 tokens; give --vocab base" in error
    assert main([*command, "--vocab", "base"]) == 0
    run = open_run(capsys.readouterr().out.strip().splitlines()[-1])
    assert run.summary()["vectors"]["added_rows"] == {"parity": {key: 3}}
    vector = run.load_model().body.vectors().delta(1, key)
    assert torch.equal(vector, state[key][:rows].float() - load_file(str(bert / "model.safetensors"))[key].float())
    out = tmp_path / "merged"
    assert main(["merge", str(run.path), "--method", "task_arithmetic", "--out", str(out)]) == 0
    assert f"left out of the merge: parity's added vocabulary rows (3 of {key})" in capsys.readouterr().out
    assert load_file(str(out / "model.safetensors"))[key].shape[0] == rows


def test_tied_input_and_output_embeddings_are_merged_once_and_stay_tied(finetunes, tmp_path, capsys):
    """A GPT-2-like language model whose output projection is its input embedding, saved as both tensors
    (as a state dict holds them), and two fine-tunes of it that moved every weight: the merge writes the
    embedding's merge once, as both tensors (a random method's drops included), transformers loads
    them tied, and the matrix merges take the embedding's mean."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tiny_models import VOCAB, tokenizer

    _, parent, _ = finetunes
    heads, data = exported(parent, ["cat", "parity"], tmp_path / "heads")  # 32 features, as this GPT-2's
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=3,
                        eos_token_id=3)
    folders = []
    for i, name in enumerate(["base", "cat", "parity"]):
        model = GPT2LMHeadModel.from_pretrained(folders[0]) if folders else GPT2LMHeadModel(config)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02 * (i > 0))
        folders.append(tmp_path / name)
        model.save_pretrained(folders[-1])
        tokenizer(folders[-1]).save_pretrained(folders[-1])
        state = {key: value.clone() for key, value in model.state_dict().items()}
        assert torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])
        save_file(state, str(folders[-1] / "model.safetensors"))
        for file in heads[i - 1].glob("lsmn-head.*") if i else []:
            shutil.copy(file, folders[-1] / file.name)
    capsys.readouterr()
    assert main(["vectors", *map(str, folders), "--data", str(data), "--out", str(tmp_path / "runs")]) == 0
    run = capsys.readouterr().out.strip().splitlines()[-1]
    wte = "transformer.wte.weight"
    deltas = torch.stack([load_file(str(f / "model.safetensors"))[wte] for f in folders[1:]]) - \
        load_file(str(folders[0] / "model.safetensors"))[wte]
    for method, extra in [("dare", ["--density", "0.5"]), ("tsv_m", [])]:
        out = tmp_path / method
        assert main(["merge", run, "--method", method, *extra, "--out", str(out), "--no-eval"]) == 0
        written = load_file(str(out / "model.safetensors"))
        assert torch.equal(written["lm_head.weight"], written[wte]), method
        loaded = GPT2LMHeadModel.from_pretrained(out, local_files_only=True)
        assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
        assert torch.equal(loaded.lm_head.weight, written[wte])
    base = load_file(str(folders[0] / "model.safetensors"))[wte]
    assert torch.allclose(written[wte], base + deltas.mean(0), atol=1e-6)  # tsv_m: an embedding takes the mean


def test_adamerging_learns_coefficients_that_lower_the_predictions_entropy(finetunes, tmp_path):
    from lsmn_core.schemes.vectors.scheme import prediction_entropy
    from lsmn_core.training.finetune import FinetunePlan, finetune

    _, _, vectors = finetunes
    doc = {**vectors.routing()[0], "recipe": {"method": "task_arithmetic", "lambda": 0.3}}
    child = open_run(finetune(vectors, FinetunePlan(30, "routing", routing=(doc, vectors.routing()[1])),
                              tmp_path, device="cpu"))
    learned = child.routing()[0]["recipe"]
    assert learned["method"] == "task_arithmetic" and learned["coefficients"]  # no longer all 1
    # the weights (lambda x coefficients) move at the paper's rate: 30 Adam steps of lr 1e-3, about 0.03 at most
    steps = torch.tensor(learned["coefficients"]) * 0.3 - 0.3
    assert 0.005 < steps.abs().max() <= 0.0315
    assert child.meta["parent"] == vectors.id

    def entropy(run, recipe) -> float:
        model = run.load_model().eval()
        routing.apply(model, routing.decode({**run.routing()[0], "recipe": recipe}, run.routing()[1], model))
        config = run.config()
        from lsmn_core.data.loading import load_tasks
        from lsmn_core.pretrained.text import tokenization
        data = load_tasks(config.tasks, config.data, tokenization(config, None))
        with torch.no_grad():
            return sum(float(prediction_entropy(model.forward_tasks(torch.as_tensor(d.splits["train"][0]), [t])[0],
                                                d.spec)) for t, d in enumerate(data))

    assert entropy(child, learned) < entropy(vectors, doc["recipe"])


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "unknown merge method 'nope'"), (["--method", "ties", "--density", "0"], "density must"),
    (["--method", "tall"], "--task: the tall merge gives each task its own network"),
    (["--method", "tsv_c", "--keep", "1.5", "--task", "cat"], "keep must be in (0, 1], got 1.5"),
    (["--method", "ties", "--keep", "0.1"], "--keep: ties keeps no share of its own (tsv_c does)"),
    *((["--method", "iso_cts", "--common", bad], f"common must be in (0, 1), got {float(bad)}") for bad in ("0", "1")),
    (["--method", "tsv_m", "--common", "0.5"], "--common: tsv_m has no common space (iso_cts has)"),
    *((["--method", "ties", "--lambda", bad], "--lambda must be a positive number or auto")
      for bad in ("0", "-1", "nan", "inf", "big")),
    (["--method", "tsv_m", "--exclude", "decoder.*"], "--exclude 'decoder.*': matches none of the run's")])
def test_bad_merges_are_refused_in_one_line_and_write_nothing(finetunes, tmp_path, capsys, args, message):
    _, _, vectors = finetunes
    assert main(["merge", str(vectors.path), *args, "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr()
    assert printed.err.count("\n") == 1 and message in printed.err and not (tmp_path / "out").exists()
    assert printed.out == ""  # refused before it starts: no estimate, no evaluation


def test_merge_never_writes_over_or_into_what_it_reads(finetunes, tmp_path, capsys):
    _, parent, vectors = finetunes
    (tmp_path / "mine.txt").write_text("keep")
    for out in (tmp_path / "mine.txt", vectors.path / "inner", parent.path):
        assert main(["merge", str(vectors.path), "--method", "ties", "--out", str(out)]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert (tmp_path / "mine.txt").read_text() == "keep" and not (vectors.path / "inner").exists()


def test_an_edited_coefficient_table_of_the_wrong_shape_is_refused(finetunes):
    _, _, vectors = finetunes
    doc = {**vectors.routing()[0], "recipe": {"method": "ties", "coefficients": [[1.0, 2.0]]}}
    with pytest.raises(RoutingError, match="coefficients must be a table of 3 tasks x 4 layers"):
        routing.decode(doc, vectors.routing()[1], vectors.skeleton())


def test_fine_tunes_of_another_checkpoint_or_with_nan_are_refused(finetunes, tmp_path, capsys):
    bert, parent, _ = finetunes
    folders, data = exported(parent, parent.task_names[:2], tmp_path)
    weights = folders[1] / "model.safetensors"
    state = load_file(str(weights))
    state["encoder.layer.0.attention.self.query.weight"][0, 0] = float("nan")
    save_file(state, str(weights))
    capsys.readouterr()
    assert main(["vectors", str(bert), *map(str, folders), "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "NaN or infinite values in 'encoder.layer.0.attention.self.query.weight'" in capsys.readouterr().err
    other = hf_model(tmp_path / "other-bert", family="distilbert")
    shutil.copy(other / "model.safetensors", weights)
    assert main(["vectors", str(bert), *map(str, folders), "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "a fine-tune of another" in error
    assert not list(tmp_path.glob("r/*/run.json"))  # no run made (the data cache may hold the tokenized text)


def test_the_app_shows_and_edits_a_vectors_run(finetunes, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import app.state
    from helpers import APP_PATIENCE

    _, _, vectors = finetunes
    monkeypatch.setattr(app.state, "DEFAULT_RUNS", str(vectors.path.parent))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=APP_PATIENCE).run()
    run_box = next(s for s in at.sidebar.selectbox if s.label == "Run")
    run_box.set_value(next(o for o in run_box.options if o.startswith(vectors.id))).run()
    specs = " ".join(spec_of(c) for c in at.get("plotly_chart"))
    assert "Sign conflicts per layer" in specs and "Cosine similarity of the task vectors" in specs
    assert "Singular task interference of each pair" in specs and "in its top floor(r / T) singular" in specs
    at.switch_page("views/sharing.py").run()
    at.radio(key=f"graph_measure_{vectors.id}").set_value("singular task interference").run()
    graph = next(spec_of(c) for c in at.get("plotly_chart") if "Which tasks share what" in spec_of(c))
    assert not at.exception and not at.error and "singular task interference (the whole network)" in graph
    for page in ["views/masks.py", "views/edit.py"]:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
    at.selectbox(key=f"method_{vectors.id}").set_value("ties").run()
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception and not at.error
    tables = [d.value for d in at.dataframe if "test change" in d.value.columns]
    assert tables and set(tables[0]["task"]) == {"cat", "parity", "dog"}
    individual = vectors.summary()["metrics"]  # each task's raw accuracy beside the normalised one
    for _, row in tables[0].iterrows():
        assert row["normalised"] == pytest.approx(row["test"] / individual[row["task"]]["test"], abs=1e-6)
    next(b for b in at.button if b.label == "Export the merge").click().run()
    assert not at.exception and not at.error and any("Written:" in s.value for s in at.success)
    (written,) = (vectors.path.parent / ".merges").iterdir()
    assert (written / "model.safetensors").is_file() and json.loads((written / "lsmn-merge.json").read_text())[
        "recipe"]["method"] == "ties"
    next(b for b in at.button if b.label == "Choose lambda on dev").click().run()  # the sweep, then its curve
    assert not at.exception and not at.error
    curve = json.loads(next(spec_of(c) for c in at.get("plotly_chart") if "against lambda" in spec_of(c)))
    best = curve["data"][1]["x"][0]
    assert len(curve["data"][0]["x"]) == 30 and curve["data"][1]["y"][0] == max(curve["data"][0]["y"])
    next(b for b in at.button if b.label == f"Use lambda = {best:.1f}").click().run()
    assert not at.exception and next(n for n in at.number_input if n.label == "Lambda").value == best
    at.selectbox(key=f"method_{vectors.id}").set_value("iso_cts").run()
    at.number_input(key=f"common_{vectors.id}").set_value(0.5).run()
    next(b for b in at.button if b.label == "Export the merge").click().run()
    assert not at.exception and not at.error
    written = max((vectors.path.parent / ".merges").iterdir(), key=lambda p: p.stat().st_mtime)
    assert json.loads((written / "lsmn-merge.json").read_text())["recipe"]["common"] == 0.5
    at.selectbox(key=f"method_{vectors.id}").set_value("tsv_c").run()  # a compression: keep, a task to export
    at.number_input(key=f"keep_{vectors.id}").set_value(0.05).run()
    next(b for b in at.button if b.label == "Export the merge").click().run()
    assert not at.exception and not at.error
    written = max((vectors.path.parent / ".merges").iterdir(), key=lambda p: p.stat().st_mtime)
    document = json.loads((written / "lsmn-merge.json").read_text())
    assert document["recipe"]["keep"] == 0.05 and document["task"] == "cat" and document["stored"]["share"] < 0.1


def test_a_vectors_run_moves_with_the_run_beside_it(finetunes, tmp_path):
    """Its inputs are recorded from its own folder when they lie beside it, as the shipped samples do."""
    _, parent, vectors = finetunes
    for run in (parent, vectors):
        shutil.copytree(run.path, tmp_path / "moved" / run.id)
    moved = open_run(tmp_path / "moved" / vectors.id)
    assert moved.config().scheme.inputs[0]["run"] == str((tmp_path / "moved" / parent.id).resolve())
    assert moved.meta["config"]["scheme"]["inputs"][0]["run"] == f"../{parent.id}"
    metrics = evaluate_run(moved)["metrics"]
    assert {t: m["test"] for t, m in metrics.items()} == pytest.approx(
        {t: m["test"] for t, m in parent.summary()["metrics"].items()}, abs=1e-6)


def test_the_matrix_merges_study_tables_every_method_tsv_c_s_curve_and_each_layer_excluded(finetunes, monkeypatch):
    """On the tiny BERT's fine-tunes: raw and normalised accuracy of every method with lambda picked on dev
    (from a grid of two, here), TSV-C's stored share growing with keep, and one row per layer taken out
    of TSV-M."""
    import lsmn_core.schemes.vectors.evaluation as evaluation
    from lsmn.study_matrix_merges import KEEPS, METHODS, matrix_merges_study

    monkeypatch.setattr(evaluation, "LAMBDAS", (0.5, 1.0))
    _, parent, _ = finetunes
    methods, note, curve, excluded, correlation = matrix_merges_study(adamerging_steps=5,
                                                                     finetunes=str(parent.path)).split("\n\n")
    assert "Lambda picked on dev" in note and correlation.startswith("Spearman correlation")
    header = methods.splitlines()[0]
    assert header == "| task | individual | " + " | ".join([*METHODS, "AdaMerging"]) + " |"
    assert [row.split(" | ")[0] for row in methods.splitlines()[2:]] == ["| cat", "| parity", "| dog", "| mean"]
    shares = [float(row.split(" | ")[1].rstrip("%")) for row in curve.splitlines()[2:]]
    assert len(shares) == len(KEEPS) and shares == sorted(shares) and shares[0] < shares[-1] <= 100
    layers = [row.split(" | ")[0] for row in excluded.splitlines()[2:]]
    assert sorted(layers) == ["| 0", "| 1"]
