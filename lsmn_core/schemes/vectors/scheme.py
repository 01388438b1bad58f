"""The network of a task vectors run: the checkpoint with each task's values of its tensors, as the
run's recipe (its routing) says: `individual` (each task its own fine-tune, the baseline every merge
is measured against), or a merge method of the registry (lsmn_core.merges) with lambda, density,
seed and per-task, per-layer coefficients, which AdaMerging learns ("AdaMerging: Adaptive Model
Merging for Multi-Task Learning": the coefficients alone train, to lower the entropy of each task's
predictions on its unlabelled inputs; the checkpoint and the vectors stay frozen).

The masks are each task's largest deltas per tensor (`density` of them), for the overlap pages.
"""

from __future__ import annotations

from dataclasses import replace

import math

import torch
import torch.nn.functional as F
from torch import nn

from lsmn_core.errors import ConfigError, RoutingError
from lsmn_core.merges import MERGES
from lsmn_core.merges.combine import merge_tensor, weighted
from lsmn_core.merges.method import COMMON, Recipe
from lsmn_core.pretrained import loader_of
from lsmn_core.pretrained.network import Source, TargetScheme
from lsmn_core.schemes.task_masks import TaskMasks
from lsmn_core.schemes.vectors.inputs import TaskVectorSet, VectorInput
from lsmn_core.training.session import Phase

INDIVIDUAL = "individual"  # the recipe of no merge: each task its own fine-tune


def layer_labels(depth: int) -> list[str]:
    """The coefficient table's columns: before the layers, each layer, after them."""
    return ["before", *(f"layer {i}" for i in range(depth)), "after"]


def recipe_from(data, tasks: int, columns: int) -> Recipe:
    """A routing document's recipe, checked (RoutingError naming what is wrong)."""
    if not isinstance(data, dict):
        raise RoutingError("the routing's 'recipe' must be a mapping (method, lambda, density, ...)")
    known = {"method", "lambda", "density", "seed", "coefficients", "tall_lambdas", "consensus_k", "exclude", "keep",
             "common"}
    if unknown := sorted(set(data) - known):
        raise RoutingError(f"recipe: unknown key {unknown[0][:40]!r} (known: {', '.join(sorted(known))})")
    method = data.get("method", INDIVIDUAL)
    if method != INDIVIDUAL and method not in MERGES:
        raise RoutingError(f"recipe.method: {str(method)[:40]!r} is not a merge method (known: {INDIVIDUAL}, "
                           f"{', '.join(MERGES.names())})")
    lam = data.get("lambda", MERGES.get(method).default_lambda if method != INDIVIDUAL else 1.0)
    try:
        return Recipe(method, lam, data.get("density", 0.2), data.get("seed", 0), data.get("coefficients") or [],
                      data.get("tall_lambdas") or [], data.get("consensus_k", 2),
                      data.get("exclude") or [], data.get("keep"), data.get("common", COMMON)).check(tasks, columns)
    except (ConfigError, TypeError, ValueError) as exc:
        raise RoutingError(f"recipe: {exc}") from None


def recipe_document(recipe: Recipe) -> dict:
    return {"method": recipe.method, "lambda": recipe.lam, "density": recipe.density, "seed": recipe.seed,
            "coefficients": recipe.coefficients, "tall_lambdas": recipe.tall_lambdas,
            "consensus_k": recipe.consensus_k, **({"exclude": recipe.exclude} if recipe.exclude else {}),
            **({"keep": recipe.keep} if recipe.keep is not None else {}),
            **({"common": recipe.common} if recipe.common != COMMON else {})}


class TaskVectors(TaskMasks, TargetScheme):
    kind = "vectors"

    def __init__(self, options, n_tasks: int, source: Source, config):
        super().__init__(options, n_tasks, source, config)
        self.start_masks()
        for name, shape in self.targets.items():
            self.register_mask(name, shape, [True] * n_tasks, self.target_layers[name])
        self.columns = source.depth + 2
        self.coefficients = nn.Parameter(torch.ones(n_tasks, self.columns))
        self.recipe = Recipe(INDIVIDUAL, 1.0)
        self.inputs = [VectorInput.from_dict(d, f"scheme.inputs[{i}]") for i, d in enumerate(options.inputs)]
        self.pretrained_options = config.model.pretrained
        self._deltas: dict[str, torch.Tensor] | None = None  # [T, ...] per target, read when first needed
        self._parts: dict[str, tuple[torch.Tensor, torch.Tensor | None]] | None = None  # of the recipe
        self._merged: tuple[tuple, dict[str, torch.Tensor]] | None = None  # cached while nothing trains

    @classmethod
    def choose_targets(cls, module, layers_path, layers, config):
        """With `everywhere` (fine-tunes of the whole network), every floating-point parameter: in a
        layer, that layer; before the layers' first parameter -1, after their last the depth."""
        if not config.scheme.everywhere:
            return super().choose_targets(module, layers_path, layers, config)
        chosen, seen_layers = {}, False
        for name, parameter in module.named_parameters():
            if not parameter.is_floating_point():
                continue
            inside = name.startswith(f"{layers_path}.")
            index = name.removeprefix(f"{layers_path}.").split(".", 1)[0] if inside else ""
            if index.isdigit():
                chosen[name], seen_layers = int(index), True
            else:
                chosen[name] = len(layers) if seen_layers else -1
        return chosen

    def vectors(self, verify: bool = True) -> TaskVectorSet:
        """The inputs, checked against what the run recorded (MissingSourceError naming a file) unless
        `verify` is False (their shapes only, as an estimate needs them)."""
        for item in self.inputs if verify else []:
            item.verify()
        return TaskVectorSet(loader_of(self.pretrained_options).weight_files(), list(self.targets), self.inputs,
                             vocab=self.options.vocab)

    def deltas(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._deltas is None:
            vectors = self.vectors()
            self._deltas = {name: vectors.deltas(name).to(device) for name in self.targets}
        return self._deltas

    def parts(self, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Each target's parts [T, ...] and masks under the recipe's method, chunk by chunk of rows
        as the merge writer computes them (so a random method draws the same numbers)."""
        if self._parts is None:
            method, deltas = MERGES.get(self.recipe.method)(), self.deltas(device)
            self._parts = {}
            for name, stacked in deltas.items():
                chunks = list(merge_tensor(method, self.recipe, name, tuple(stacked.shape[1:]), _task_of(stacked),
                                           _rows_of(stacked), len(stacked)))
                parts = torch.cat([p for _, p, _ in chunks], 1) if stacked.dim() > 1 else chunks[0][1]
                masks = None if chunks[0][2] is None else \
                    (torch.cat([m for _, _, m in chunks], 1) if stacked.dim() > 1 else chunks[0][2])
                self._parts[name] = parts.to(device), None if masks is None else masks.to(device)
        return self._parts

    def task_weights(self, task, pretrained):
        device = next(iter(pretrained.values())).device
        if self.recipe.method == INDIVIDUAL:
            deltas = self.deltas(device)
            return {name: pretrained[name] + deltas[name][task] for name in self.targets}
        merged = self.merged(device)
        return {name: pretrained[name] + (delta[task] if len(delta) > 1 else delta[0])
                for name, delta in merged.items()}

    def merged(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Each target's merged delta [1 or T, ...]; kept while the coefficients do not change and no
        gradient is asked for."""
        stamp = (self.coefficients._version, id(self._parts))
        if self._merged is not None and self._merged[0] == stamp and not torch.is_grad_enabled():
            return self._merged[1]
        own = MERGES.get(self.recipe.method).own_parts
        merged = {name: weighted(parts, masks, self.coefficients[:, self.target_layers[name] + 1], self.recipe.lam, own)
                  for name, (parts, masks) in self.parts(device).items()}
        if not torch.is_grad_enabled():
            self._merged = stamp, merged
        return merged

    def routing_document(self, task_names):
        coefficients = self.coefficients.detach().cpu().tolist()
        plain = all(v == 1.0 for row in coefficients for v in row)
        recipe = recipe_document(self.recipe) | {"coefficients": [] if plain else coefficients}
        return {"recipe": recipe, "layers": layer_labels(self.columns - 2)}

    def parse_routing_document(self, doc, task_names):
        return {"recipe": recipe_from(doc.get("recipe", {}), len(task_names), self.columns)}

    def load_routing(self, state):
        if "masks" in state:
            super().load_routing(state)
        recipe = state.get("recipe")
        if recipe is not None:
            same_parts = replace(recipe, lam=self.recipe.lam) == self.recipe  # lambda scales the parts' sum only
            self.recipe = recipe
            with torch.no_grad():
                self.coefficients.copy_(recipe.table(self.n_tasks, self.columns))
            self._merged = None
            if not same_parts:
                self._parts = None

    def routing_parameters(self):
        return ["coefficients"]

    def lr_scales(self):
        """The merge's weights are lambda x the coefficients: these learn at lr / lambda, so that the
        weights move at AdaMerging's own rate, whatever lambda the recipe starts from."""
        return {"coefficients": 1 / self.recipe.lam} if self.recipe.lam > 0 else {}

    def routing_summary(self, task_names):
        return {"recipe": recipe_document(self.recipe)}

    def finetune_phase(self, session, tasks: list[int], steps: int) -> Phase:
        """AdaMerging: the coefficients learn to lower the entropy of each task's predictions on its
        training inputs (their labels unread), every task each step."""
        if self.recipe.method == INDIVIDUAL:
            raise ConfigError("AdaMerging learns a merge's coefficients: give the run a merge method first "
                              "(its routing's recipe), not 'individual'")
        size = session.config.train.batch_size

        def entropy(_) -> torch.Tensor:
            total = torch.zeros((), device=self.coefficients.device)
            for task in tasks:
                x = session.tasks.batch(task, size, session.generator, "train")[0]
                total = total + prediction_entropy(session.model.forward_tasks(x, [task])[0],
                                                   session.model.specs[task])
            return total

        return Phase("adamerging", tasks, steps, sampling="all", early_stopping=False, loss=entropy)


def _task_of(stacked: torch.Tensor):
    """One task's whole tensor, on the CPU (where merges are computed)."""
    return lambda task: stacked[task].cpu()


def _rows_of(stacked: torch.Tensor):
    """Every task's chunk of rows, on the CPU (a tensor of one number: all of it)."""
    return lambda rows: (stacked[:, rows] if stacked.dim() > 1 else stacked).cpu()


def prediction_entropy(logits: torch.Tensor, spec) -> torch.Tensor:
    """The mean Shannon entropy of a task's predicted distributions (per token for tagging, over real
    tokens; 0 for regression, which has none)."""
    if spec.kind == "regression":
        return logits.sum() * 0
    probabilities = F.softmax(logits.float(), -1)
    entropy = -(probabilities * F.log_softmax(logits.float(), -1)).sum(-1)
    return entropy.mean() / math.log(max(2, logits.shape[-1]))
