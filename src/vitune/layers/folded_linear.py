"""A frozen linear layer and structured updates of its weight, trained as one dense linear.

    y = x (W0 + sum_k U_k)^T + b0 + sum_k c_k

where each U_k is a structured update: a grouped weight on the block diagonal (Consolidator's branches), or a
dense block on a range of rows (KAdaptation's dropped q and v updates). Run as one product, the forward and the
input's gradient cost what the frozen linear alone costs, where a branch beside it would read the input and
write, add and differentiate a whole extra output. The backward then computes, of the weight gradient
grad^T x, only the entries the updates cover: each grouped weight its blocks (:func:`grouped_weight_grad`),
each row block its rows; each bias gets the sum of grad over the tokens (its rows of it).

An update is named by a tuple of constants (so ``torch.compile`` traces it):
``("grouped", shuffle)`` -- a (g, out/g, in/g) weight (after the channel shuffle of ``grouped_linear`` when
shuffle is true) and an (out,) bias; ``("rows", start, stop)`` -- a (stop - start, in) weight on those rows
and a (stop - start,) bias. Any bias may be None.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grouped_linear import channel_shuffle, grouped_dense_weight, grouped_weight_grad

Update = tuple  # ("grouped", shuffle) or ("rows", start, stop)


def _dense(update: Update, weight: torch.Tensor, bias: torch.Tensor | None, out_features: int):
    """The update as an (out, in) matrix and an (out,) bias (or None)."""
    if update[0] == "grouped":
        return grouped_dense_weight(weight, update[1]), bias
    _, start, stop = update
    pad = (start, out_features - stop)
    return F.pad(weight, (0, 0, *pad)), F.pad(bias, pad) if bias is not None else None


def folded_weight_and_bias(weight: torch.Tensor, bias: torch.Tensor | None, updates: tuple[Update, ...],
                           tensors: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W0 + sum_k U_k and b0 + sum_k c_k (None when no bias is given at all)."""
    for update, update_weight, update_bias in zip(updates, tensors[::2], tensors[1::2]):
        dense, dense_bias = _dense(update, update_weight, update_bias, weight.shape[0])
        weight = weight + dense
        if dense_bias is not None:
            bias = dense_bias if bias is None else bias + dense_bias
    return weight, bias


class FoldedLinear(torch.autograd.Function):
    """``FoldedLinear.apply(x, W0, b0, updates, U_1, c_1, U_2, c_2, ...)``: see the module's docstring.

    The dense matrix is rebuilt in backward rather than kept (a weight-sized tensor per layer).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, updates, *tensors):
        ctx.updates = updates
        ctx.save_for_backward(x, weight, bias, *tensors)
        return F.linear(x, *folded_weight_and_bias(weight, bias, updates, tensors))

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, *tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad  # x, weight, bias, updates, U_1, c_1, ...
        grad2d = grad.reshape(-1, grad.shape[-1])
        x2d = x.reshape(-1, x.shape[-1])
        # Under autocast the output, and so grad, is in the low precision; each gradient takes its input's dtype.
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            dense, _ = folded_weight_and_bias(weight, None, ctx.updates, tuple(tensors))
            grad_x = (grad2d @ dense.to(grad.dtype)).view(x.shape).to(x.dtype)
        if needs[1]:
            grad_weight = (grad2d.t() @ x2d.to(grad.dtype)).to(weight.dtype)
        token_sum = grad2d.sum(0) if needs[2] or any(needs[5::2]) else None
        if needs[2]:
            grad_bias = token_sum.to(bias.dtype)
        update_grads = []
        for k, update in enumerate(ctx.updates):
            update_weight, update_bias = tensors[2 * k], tensors[2 * k + 1]
            rows = slice(None) if update[0] == "grouped" else slice(update[1], update[2])
            grad_w = grad_b = None
            if needs[4 + 2 * k]:
                if update[0] == "grouped":
                    groups = update_weight.shape[0]
                    inputs = channel_shuffle(x2d, groups) if update[1] else x2d
                    grad_w = grouped_weight_grad(grad2d, inputs, groups)
                else:
                    grad_w = grad2d[:, rows].t() @ x2d.to(grad.dtype)
                grad_w = grad_w.to(update_weight.dtype)
            if needs[5 + 2 * k]:
                grad_b = token_sum[rows].to(update_bias.dtype)
            update_grads += [grad_w, grad_b]
        return grad_x, grad_weight, grad_bias, None, *update_grads
