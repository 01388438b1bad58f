"""Every task's linear map through its own mask over one shared weight, task by task.

The batched way, stack(weight * mask[t]) then one bmm, writes T masked copies of the weight in the
forward and T gradients of them in the backward, then sums them: O(T x weights) memory traffic that
on a CPU costs more than the matmuls themselves. MaskedLinear computes each task's masked weight
into one reused buffer, right before its matmul (forward, and again in the backward instead of
keeping it), and adds each task's masked gradient into the shared gradient in place.
"""

from __future__ import annotations

import torch


class MaskedLinear(torch.autograd.Function):
    """y[i] = x[i] @ (weight * masks[tasks[i]]).T + bias[i] for x [T', B, in], weight [out, in], bias
    [T', out] or one shared [1, out], masks [T, out, in] of 0 and 1 (on a CPU bool is the slow
    choice: uint8 or the weight's dtype multiply 2-4x faster)."""

    @staticmethod
    def forward(ctx, x, weight, bias, masks, tasks: list[int]):
        ctx.save_for_backward(x, weight, masks)
        ctx.tasks, ctx.shared_bias = tasks, bias.shape[0] == 1
        masked = torch.empty_like(weight)
        out = x.new_empty(x.shape[0], x.shape[1], weight.shape[0])
        for i, t in enumerate(tasks):
            torch.mul(weight, masks[t], out=masked)
            torch.addmm(bias[0 if ctx.shared_bias else i], x[i], masked.T, out=out[i])
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, masks = ctx.saved_tensors
        want_x, want_weight, want_bias = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if want_x else None
        grad_weight = torch.zeros_like(weight) if want_weight else None
        scratch = torch.empty_like(weight)
        for i, t in enumerate(ctx.tasks):
            if want_x:
                torch.mul(weight, masks[t], out=scratch)
                torch.mm(grad[i], scratch, out=grad_x[i])
            if want_weight:
                torch.mm(grad[i].T, x[i], out=scratch)
                grad_weight.addcmul_(scratch, masks[t])
        grad_bias = None
        if want_bias:
            grad_bias = grad.sum(1)
            grad_bias = grad_bias.sum(0, keepdim=True) if ctx.shared_bias else grad_bias
        return grad_x, grad_weight, grad_bias, None, None
