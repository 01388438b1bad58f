"""`dare` and `dare_ties`: "Language Models are Super Mario: Absorbing Abilities from Homologous
Models as a Free Lunch". Drop And REscale: each entry of each task vector is dropped with
probability 1 - density and the rest rescaled by 1 / density (drawn from the recipe's seed, the
tensor's name and the chunk of rows, chunks of a fixed size: a merge is reproducible), then summed
(`dare`, with task arithmetic's lambda) or merged by TIES's elect and mean (`dare_ties`)."""

from __future__ import annotations

import torch

from lsmn_core.merges.method import MergeMethod, Recipe
from lsmn_core.merges.ties import elected_parts


def dropped(deltas: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Each entry kept with probability `density`, and the kept ones divided by it."""
    keep = torch.rand(deltas.shape, generator=generator) < density
    return deltas * keep / density


class Dare(MergeMethod):
    name = "dare"
    default_lambda = 0.3
    uses_density = True
    random = True

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return dropped(deltas, recipe.density, generator)


class DareTies(Dare):
    name = "dare_ties"
    default_lambda = 1.0

    def parts(self, deltas: torch.Tensor, levels, recipe: Recipe, generator) -> torch.Tensor:
        return elected_parts(super().parts(deltas, levels, recipe, generator))
