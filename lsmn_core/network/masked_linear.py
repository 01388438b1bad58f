"""Every task's linear map through its own mask over one shared weight, task by task.

The batched way, stack(weight * mask[t]) then one bmm, writes T masked copies of the weight in the
forward and T gradients of them in the backward, then sums them: O(T x weights) memory traffic that
on a CPU costs more than the matmuls themselves. MaskedLinear computes each task's masked weight
right before its matmul and adds each task's masked gradient into the shared gradient in place.
While the step's masked weights are small (KEEP_MASKED_LIMIT) the backward reuses them, one buffer
per task: a single T-task buffer would pass glibc's mmap threshold (32 MB) and be page-faulted in
afresh on every step. Past the limit one reused buffer holds them and the backward recomputes them.
"""

from __future__ import annotations

import torch

KEEP_MASKED_LIMIT = 2**27  # bytes of masked weights (all the step's tasks) kept from forward to backward


class MaskedLinear(torch.autograd.Function):
    """y[i] = x[i] @ (weight * masks[tasks[i]]).T + bias[i] for x [T', B, in], weight [out, in], bias
    [T', out] or one shared [1, out], masks [T, out, in] of 0 and 1 (on a CPU bool is the slow
    choice: uint8 or the weight's dtype multiply 2-4x faster)."""

    @staticmethod
    def forward(ctx, x, weight, bias, masks, tasks: list[int]):
        ctx.tasks, ctx.shared_bias = tasks, bias.shape[0] == 1
        keep = len(tasks) * weight.numel() * weight.element_size() <= KEEP_MASKED_LIMIT
        buffers = [torch.empty_like(weight) for _ in range(len(tasks) if keep else 1)]
        out = x.new_empty(x.shape[0], x.shape[1], weight.shape[0])
        for i, t in enumerate(tasks):
            masked = buffers[i if keep else 0]
            torch.mul(weight, masks[t], out=masked)
            torch.addmm(bias[0 if ctx.shared_bias else i], x[i], masked.T, out=out[i])
        ctx.save_for_backward(x, weight, masks, *(buffers if keep else ()))
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, masks, *kept = ctx.saved_tensors
        want_x, want_weight, want_bias = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if want_x else None
        grad_weight = (torch.empty_like if ctx.tasks else torch.zeros_like)(weight) if want_weight else None
        scratch = torch.empty_like(weight)
        for i, t in enumerate(ctx.tasks):
            if want_x:
                masked = kept[i] if kept else torch.mul(weight, masks[t], out=scratch)
                torch.mm(grad[i], masked, out=grad_x[i])
            if want_weight:
                torch.mm(grad[i].T, x[i], out=scratch)
                if i == 0:
                    torch.mul(scratch, masks[t], out=grad_weight)
                else:
                    grad_weight.addcmul_(scratch, masks[t])
        grad_bias = None
        if want_bias:
            grad_bias = grad.sum(1)
            grad_bias = grad_bias.sum(0, keepdim=True) if ctx.shared_bias else grad_bias
        return grad_x, grad_weight, grad_bias, None, None
