"""The routing of a scheme whose routing is each task's signature, logits xi [T, L, K] over K
templates (the mixture's templates, Polytropon's skills): routing.json's "signatures" (mixture
weights per task and layer), an edited one checked and turned back into logits, and summary.json's
report. Each scheme says how its logits give weights (`mixture_weights`) and back (`logits_of`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lsmn_core.schemes.mixture.signatures import parse_signatures, signature_summary


class SignatureRouting(nn.Module):
    """A mixin of a SharingScheme with `xi`, `depth` and `options` (templates, signature)."""

    xi: nn.Parameter
    depth: int
    options: Any
    mixture_weights: Callable[[], torch.Tensor]  # the scheme's own: every task's weights [T, L, K]
    logits_of: Callable[[torch.Tensor], torch.Tensor]  # the scheme's own: logits xi giving weights [T, L, K] back

    def routing_parameters(self):
        return ["xi"]

    def routing_document(self, task_names):
        weights = self.mixture_weights().detach().cpu().tolist()
        return {"templates": self.options.templates, "signature_kind": self.options.signature,
                "signatures": dict(zip(task_names, weights))}

    def parse_routing_document(self, doc, task_names):
        """Signatures per task: full mixture weights [L][K], or a module order [L] (one-hot)."""
        return {"xi": self.logits_of(parse_signatures(doc, task_names, self.depth, self.options.templates))}

    def load_routing(self, state):
        if "xi" in state:
            with torch.no_grad():
                self.xi.copy_(state["xi"])

    def routing_summary(self, task_names):
        return signature_summary(self.mixture_weights().detach(), task_names)
