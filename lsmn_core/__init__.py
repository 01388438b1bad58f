"""LSMN Studio core: multitask networks with shared, sparse and routed modules.

The Python API (lsmn_core.api): Task, train, open_run."""

from lsmn_core.api import Task, TrainedRun, open_run, train
from lsmn_core.version import __version__

__all__ = ["Task", "TrainedRun", "open_run", "train", "__version__"]
