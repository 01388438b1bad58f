import json
import platform

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_config
from lsmn_core.config import DataConfig, TaskConfig, parse_config
from lsmn_core.data.loading import load_task
from lsmn_core.data.splits import split_indices
from lsmn_core.datasets import code_tokens, digits, fashion_mnist
from lsmn_core.errors import DataError
from lsmn_core.store.runs import open_run
from lsmn_core.training.trainer import train


def digits_task(target, domain="original"):
    return load_task(TaskConfig(name=target, dataset="digits", target=target, domain=domain), DataConfig())


def test_splits_are_fixed_disjoint_and_cover_everything():
    a, b = split_indices(100, DataConfig(split_seed=4)), split_indices(100, DataConfig(split_seed=4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    together = np.concatenate(list(a.values()))
    assert sorted(together) == list(range(100))
    assert len(a["test"]) == 20 and len(a["dev"]) == 20
    assert not np.array_equal(split_indices(100, DataConfig(split_seed=5))["test"], a["test"])


def test_derived_digit_targets_share_images_and_agree():
    digit, parity, loops = digits_task("digit"), digits_task("parity"), digits_task("loops")
    for split in ("train", "dev", "test"):
        assert np.array_equal(digit.splits[split][0], parity.splits[split][0])
        d = digit.splits[split][1]
        assert np.array_equal(parity.splits[split][1], d % 2)
        assert np.array_equal(loops.splits[split][1], np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1])[d])
    assert digit.spec.n_outputs == 10 and parity.spec.n_outputs == 2 and digit.spec.metric == "accuracy"


@pytest.mark.parametrize("domain", ["rotated", "blurred", "edges", "inverted"])
def test_domains_change_the_images_but_not_the_labels(domain):
    original, other = digits_task("digit"), digits_task("digit", domain)
    x0, y0 = original.splits["train"]
    x1, y1 = other.splits["train"]
    assert x1.shape == x0.shape and np.array_equal(y0, y1)
    assert not np.allclose(x0, x1)


def test_position_task_marks_the_target_cell():
    task = load_task(TaskConfig(name="p", dataset="position", target="cell"), DataConfig())
    x, y = task.splits["train"]
    for image, cell in zip(x[:50], y[:50]):
        r, c = divmod(int(cell), 7)
        assert np.all(image[r : r + 2, c : c + 2] == 1.0)
    assert task.spec.n_outputs == 49


def test_kang_synthetic_is_linear_in_three_groups():
    """As the published set: 15 training samples per task (MUiR's 10 train and 5 validation) and 50
    test samples, inputs uniform on [-1, 1]^20, weights c_t u_g with c_t of either sign and any scale."""
    weights, scales = [], []
    for index in range(30):
        task = load_task(TaskConfig(name="k", dataset="kang_synthetic", target=str(index), domain="clean"),
                         DataConfig())
        sizes = {split: x.shape for split, (x, _) in task.splits.items()}
        assert sizes == {"train": (10, 20), "dev": (5, 20), "test": (50, 20)}
        x_all = np.concatenate([task.splits[s][0] for s in ("train", "dev", "test")]).astype(np.float64)
        y_all = np.concatenate([task.splits[s][1] for s in ("train", "dev", "test")]).astype(np.float64)
        assert x_all.min() >= -1 and x_all.max() <= 1
        w, *_ = np.linalg.lstsq(x_all, y_all, rcond=None)  # 65 samples determine the 20 weights
        assert np.allclose(x_all @ w, y_all, atol=1e-4)  # clean targets are exactly linear
        weights.append(w / np.linalg.norm(w))
        scales.append(np.linalg.norm(w))
    cosine = np.array(weights) @ np.array(weights).T
    group = np.arange(30) // 10
    assert np.all(np.abs(cosine[group[:, None] == group[None, :]]) > 0.999)
    assert np.all(np.abs(cosine[group[:, None] != group[None, :]]) < 0.99)
    assert (cosine[group[:, None] == group[None, :]] < 0).any()  # scales of both signs within a group
    assert max(scales) / min(scales) > 10  # and of very different sizes (c_t ~ N(0, 1))
    noisy = load_task(TaskConfig(name="k", dataset="kang_synthetic", target="0", domain="noisy"), DataConfig())
    clean = load_task(TaskConfig(name="k", dataset="kang_synthetic", target="0", domain="clean"), DataConfig())
    residual = noisy.splits["test"][1] - clean.splits["test"][1]
    assert 0.15 < residual.std() < 0.45 and np.array_equal(noisy.splits["test"][0], clean.splits["test"][0])


def test_fashion_mnist_reads_the_idx_files():
    task = load_task(TaskConfig(name="f", dataset="fashion_mnist", target="footwear"), DataConfig())
    x, y = task.splits["test"]
    assert x.shape == (10000, 28, 28) and set(np.unique(y)) == {0, 1}
    assert 0.0 <= x.min() and x.max() <= 1.0 and task.spec.sizes["train"] + task.spec.sizes["dev"] == 60000


def test_missing_fashion_mnist_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "FOLDERS", [str(tmp_path)])
    monkeypatch.delenv("LSMN_DATA", raising=False)
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_task(TaskConfig(name="f", dataset="fashion_mnist", target="class"), DataConfig())


@pytest.mark.parametrize("task, message", [
    (TaskConfig(name="a", dataset="digits", target="colour"), "digits has no target 'colour'"),
    (TaskConfig(name="a", dataset="digits", target="digit", domain="sepia"), "unknown domain 'sepia'"),
    (TaskConfig(name="a", dataset="imagenet", target="x"), "unknown dataset 'imagenet'"),
    (TaskConfig(name="a", dataset="kang_synthetic", target="30"), "task index 0..29"),
])
def test_bad_task_definitions(task, message):
    with pytest.raises(DataError, match=message):
        load_task(task, DataConfig())


def _user_tasks(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.randn(300, 6).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "cls.npz", X=x, y=labels)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["price"] = 3 * x[:, 2] - 2 * x[:, 3] + 0.1 * rng.randn(300)
    frame.to_csv(tmp_path / "reg.csv", index=False)
    return [{"name": "npz_task", "file": str(tmp_path / "cls.npz")},
            {"name": "csv_task", "file": str(tmp_path / "reg.csv"), "target": "price"}]


@pytest.mark.parametrize("scheme", [{"kind": "hard"}, {"kind": "sparse", "prune_rate": 0.5, "min_density": 0.3,
                                                      "round_steps": 40}])
def test_user_npz_and_csv_train_end_to_end(tmp_path, scheme):
    config = tiny_config(tasks=_user_tasks(tmp_path), scheme=scheme, train={"steps": 400, "eval_every": 100,
                                                                            "device": "cpu"})
    run = open_run(train(config, tmp_path / "runs", quiet=True))
    assert run.status == "done"
    specs = {s.name: s for s in run.specs}
    assert specs["npz_task"].kind == "classification" and specs["csv_task"].kind == "regression"
    metrics = run.summary()["metrics"]
    assert metrics["npz_task"]["test"] > 0.85  # a linear rule the network must pick up
    assert metrics["csv_task"]["test"] < 1.5  # RMSE well below the target's spread (~3.6)


def test_user_file_problems_are_reported(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "nox.npz", A=np.zeros(3))
    np.savez(tmp_path / "dev-alone.npz", X=np.zeros((6, 2)), y=np.zeros(6), X_dev=np.zeros((2, 2)))
    np.savez(tmp_path / "only-test.npz", X_test=np.zeros((6, 2)), y_test=np.zeros(6))
    pd.DataFrame({"a": [1, 2, 3, 4, 5, 6], "t": [0, 1, 0, 1, 0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    cases = [
        (TaskConfig(name="a", file=str(tmp_path / "bad.npz")), "cannot read"),
        (TaskConfig(name="a", file=str(tmp_path / "nox.npz")), "holds arrays this loader does not know: A"),
        (TaskConfig(name="a", file=str(tmp_path / "dev-alone.npz")), "holds one of X_dev and y_dev without the other"),
        (TaskConfig(name="a", file=str(tmp_path / "only-test.npz")), "must hold arrays 'X' and 'y'"),
        (TaskConfig(name="a", file=str(tmp_path / "t.csv"), target="label"), "column 'label' not in"),
        (TaskConfig(name="a", file=str(tmp_path / "data.txt")), "must be .npz or .csv"),
    ]
    (tmp_path / "data.txt").write_text("x")
    for task, message in cases:
        with pytest.raises(DataError, match=message):
            load_task(task, DataConfig())


def test_digits_reader_matches_scikit_learn():
    from sklearn.datasets import load_digits

    images, target = digits.images()
    bunch = load_digits()
    assert np.array_equal(images, (bunch.images / 16.0).astype(np.float32))
    assert np.array_equal(target, bunch.target)


def test_given_splits_are_used_as_given_and_only_missing_ones_drawn(tmp_path):
    rng = np.random.RandomState(0)
    x, y = rng.randn(50, 3), rng.choice(["cat", "dog"], 50)
    x_test, y_test = rng.randn(7, 3) + 10, np.array(["dog"] * 7)
    np.savez(tmp_path / "with-test.npz", X=x, y=y, X_test=x_test, y_test=y_test)
    task = load_task(TaskConfig(name="a", file=str(tmp_path / "with-test.npz"), standardise=False), DataConfig())
    assert task.spec.splits == {"train": "given", "dev": "drawn", "test": "given"}
    assert np.allclose(task.splits["test"][0], x_test) and task.splits["test"][1].tolist() == [1] * 7  # "dog" = 1
    assert task.spec.sizes == {"train": 40, "dev": 10, "test": 7}  # dev drawn from the 50 training rows

    frame = pd.DataFrame({"f": rng.randn(30), "label": rng.randint(0, 3, 30)})
    frame[:20].to_csv(tmp_path / "train.csv", index=False)
    frame[20:25].to_csv(tmp_path / "dev.csv", index=False)
    frame[25:].to_csv(tmp_path / "test.csv", index=False)
    task = load_task(TaskConfig(name="b", file=str(tmp_path / "train.csv"), target="label", dev_file=str(
        tmp_path / "dev.csv"), test_file=str(tmp_path / "test.csv")), DataConfig())
    assert task.spec.splits == {"train": "given", "dev": "given", "test": "given"}
    assert task.spec.sizes == {"train": 20, "dev": 5, "test": 5}
    assert task.splits["dev"][1].tolist() == frame["label"][20:25].tolist()
    with pytest.raises(DataError, match="the test split is given twice"):
        load_task(TaskConfig(name="c", file=str(tmp_path / "with-test.npz"), test_file=str(tmp_path / "test.csv"),
                             target="label"), DataConfig())


def test_a_run_records_which_splits_were_given_and_which_drawn(tmp_path):
    rng = np.random.RandomState(1)
    np.savez(tmp_path / "t.npz", X=rng.randn(40, 4), y=rng.randint(0, 2, 40), X_dev=rng.randn(8, 4),
             y_dev=rng.randint(0, 2, 8))
    config = parse_config({"name": "given", "tasks": [{"name": "t", "file": str(tmp_path / "t.npz")},
                                                      {"name": "digit", "dataset": "digits", "target": "digit"}],
                           "model": {"width": 16, "depth": 1},
                           "train": {"steps": 2, "eval_every": 2, "batch_size": 8, "device": "cpu"}})
    run = open_run(train(config, tmp_path / "runs", quiet=True))
    recorded = {t["name"]: t["splits"] for t in json.loads((run.path / "run.json").read_text())["tasks"]}
    assert recorded == {"t": {"train": "given", "dev": "given", "test": "drawn"},
                        "digit": {"train": "drawn", "dev": "drawn", "test": "drawn"}}


def test_code_tokens_are_the_standard_library_s_own_source_split_by_file():
    assert len(code_tokens.files()) > 50  # the running interpreter's top-level modules
    tasks = {t: load_task(TaskConfig(name=t, dataset="code_tokens", target=t), DataConfig())
             for t in code_tokens.TARGETS}
    kind, name_class, depth = tasks["kind"], tasks["name_class"], tasks["depth"]
    assert kind.spec.kind == "tagging" and kind.spec.modality == "tokens"
    assert kind.spec.input_shape == [code_tokens.WINDOW]
    assert kind.spec.vocab == 4096 and kind.spec.sizes["train"] > 1000
    assert f"Python {platform.python_version()} standard library" in kind.spec.source
    x, y = kind.splits["train"]
    assert np.array_equal(x, name_class.splits["train"][0])  # one set of windows, four targets
    assert ((x == 0) == (y == -1)).all()  # padding is ignored by every target
    names = (y == 0)  # NAME tokens are exactly those with a name class other than "not a name"
    assert np.array_equal(names, np.isin(name_class.splits["train"][1], [0, 1, 2]))
    assert set(np.unique(depth.splits["train"][1])) == {-1, 0, 1, 2, 3}
    again = load_task(TaskConfig(name="kind", dataset="code_tokens", target="kind"), DataConfig(split_seed=1))
    assert again.spec.sizes != kind.spec.sizes or not np.array_equal(again.splits["test"][0], kind.splits["test"][0])
    with pytest.raises(DataError, match="code_tokens has no target 'pos'"):
        load_task(TaskConfig(name="x", dataset="code_tokens", target="pos"), DataConfig())


def test_wordnet_glosses_give_four_targets_with_their_classes(monkeypatch, tmp_path):
    from lsmn_core.datasets import wordnet

    glosses, pos, lexnames = wordnet.synsets()
    assert len(glosses) == 117_659 and set(pos.tolist()) == {0, 1, 2, 3}  # WordNet 3.0's synsets, all four parts
    expected = {"pos": 4, "noun_lexname": 26, "verb_lexname": 15, "has_example": 2, "gloss_parity": 2}
    for target, classes in expected.items():
        task = wordnet.load(target, data=DataConfig(), size=500)
        texts, labels = task.splits["train"]
        assert (task.n_outputs, task.modality, len(texts)) == (classes, "text", 500)
        assert labels.min() >= 0 and labels.max() < classes and isinstance(texts[0], str)
    verbs = wordnet.load("verb_lexname", data=DataConfig(), size=100).splits["train"][0]
    assert all(glosses.index(t) >= sum(pos == 0) for t in verbs[:5])  # verb glosses come after the nouns' in file order
    parity = wordnet.load("gloss_parity", data=DataConfig(), size=50).splits["train"]
    assert all((len(t.split()) % 2 == 0) == bool(y) for t, y in zip(*parity))
    examples = wordnet.load("has_example", data=DataConfig(), size=200).splits["train"]
    assert all(('"' in t) == bool(y) for t, y in zip(*examples)) and 0 < examples[1].sum() < 200
    monkeypatch.setattr(wordnet, "FOLDERS", [str(tmp_path)])
    monkeypatch.delenv("LSMN_WORDNET", raising=False)
    wordnet.synsets.cache_clear()
    try:
        with pytest.raises(DataError, match="apt-get install -y wordnet-base"):
            wordnet.load("pos", data=DataConfig())
    finally:
        wordnet.synsets.cache_clear()
