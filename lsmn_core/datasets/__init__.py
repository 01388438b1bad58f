"""The registry of data sets (entry point group `lsmn.datasets`): a task names one by `dataset:`,
with a `target` and `args`. A data set is a callable with the contract of a `source:` factory
(lsmn_core.data.sources), called with the task's target first. The built-in ones, one module each
in this package, are entry points of the Studio's own package, as a plugin's are of its; nothing
outside a data set's module names it.
"""

from __future__ import annotations

from collections.abc import Callable

from lsmn_core.errors import DataError
from lsmn_core.plugins import Registry


def _check_dataset(name: str, obj) -> str | None:
    return None if callable(obj) else f"{obj!r:.80} is not callable"


DATASETS: Registry[Callable] = Registry("lsmn.datasets", "dataset", _check_dataset, error=DataError)
