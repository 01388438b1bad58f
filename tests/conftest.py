import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, for tests and the app

from helpers import tiny_config  # noqa: E402
from tiny_models import hf_model  # noqa: E402
from lsmn_core.training.trainer import train  # noqa: E402


@pytest.fixture(scope="session")
def sparse_run(tmp_path_factory):
    """A small finished sparse run (IMP + multi-task training), shared by the tests that read it."""
    return train(tiny_config(), tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny random BERT folder with its tokenizer (tiny_models.hf_model), one per test module."""
    return hf_model(tmp_path_factory.mktemp("bert") / "bert")
