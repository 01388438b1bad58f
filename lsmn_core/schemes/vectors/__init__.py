"""Task vectors: the fine-tunes of one checkpoint, imported (`lsmn vectors`), looked inside and merged.

After "Editing Models with Task Arithmetic", a fine-tune's task vector is its weights minus the
checkpoint's. A task vectors run refers to the fine-tunes by path and sha256 and stores only what
it derives: each task's mask of its largest deltas per tensor (so the overlap pages show which
weights each task changed, and where tasks change the same ones), statistics of interference (sign
conflicts, cosine similarity, magnitudes per layer), its tasks' heads, and a recipe (its routing)
that says how to merge them. Evaluating the run under a recipe evaluates that merge on every task;
retraining it learns the recipe's coefficients (AdaMerging); `lsmn merge` writes the merged network
in the checkpoint's own format.

importing.py makes the run, inputs.py and tensors.py read the vectors, statistics.py measures them,
scheme.py is its network, writer.py writes a merge, commands.py adds `lsmn vectors` and `lsmn merge`.
"""

from dataclasses import dataclass, field
from typing import Literal

from lsmn_core.errors import ConfigError
from lsmn_core.options import check
from lsmn_core.schemes.base import SharingScheme
from lsmn_core.schemes.vectors.inputs import VectorInput
from lsmn_core.schemes.vectors.scheme import TaskVectors


@dataclass
class VectorsOptions:
    kind: Literal["vectors"] = "vectors"
    density: float = check(lambda v: 0 < v <= 1, "must be in (0, 1]", 0.1)  # each task's mask: its largest deltas
    everywhere: bool = False  # every floating-point tensor of the checkpoint, not only the config's targets
    inputs: list[dict] = field(default_factory=list)  # where each task's vector comes from (lsmn vectors writes it)
    vocab: Literal["same", "base"] = "same"  # base: a fine-tune's added vocabulary rows are left out of its vector


class Vectors(SharingScheme):
    kind = "vectors"
    options_class = VectorsOptions
    on_checkpoint = TaskVectors

    @classmethod
    def check_config(cls, config) -> None:
        if config.model.pretrained is None:
            raise ConfigError("the vectors scheme holds the fine-tunes of a checkpoint: `lsmn vectors` makes its runs")
        if len(config.scheme.inputs) != len(config.tasks):
            raise ConfigError(f"scheme.inputs: {len(config.scheme.inputs)} task vectors for {len(config.tasks)} tasks")

    @classmethod
    def stored_paths(cls, config, folder) -> None:
        """A vector's run or fine-tune given relative to the run's folder (a run beside it); new records,
        so run.json's own stay as they are."""
        def resolved(item):
            if not isinstance(item, dict):
                return item  # VectorInput.from_dict refuses it, naming it
            item = dict(item)
            for key in ("run", "finetune"):
                if isinstance(item.get(key), str):
                    item[key] = str((folder / item[key]).resolve())
            if isinstance(item.get("files"), dict):
                item["files"] = {str((folder / str(path)).resolve()): digest for path, digest in item["files"].items()}
            return item

        config.scheme.inputs = [resolved(item) for item in config.scheme.inputs]

    @classmethod
    def summary_report(cls, summary, task_names):
        """Per target weight: its sign-conflict rate and, for a weight matrix, its singular task interference."""
        stats = summary.get("vectors") or {}
        singular = stats.get("singular_per_tensor", {})
        return {"interference": {name: {"sign_conflicts": rate, "singular": singular.get(name)}
                                 for name, rate in stats.get("sign_conflicts_per_tensor", {}).items()}}

    @classmethod
    def check_sources(cls, config) -> None:
        for index, item in enumerate(config.scheme.inputs):
            VectorInput.from_dict(item, f"scheme.inputs[{index}]").check_present()

    @classmethod
    def build_network(cls, specs, config):
        raise ConfigError("the vectors scheme holds the fine-tunes of a checkpoint: `lsmn vectors` makes its runs")
