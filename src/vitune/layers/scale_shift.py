"""SSF's layer (Lian et al., NeurIPS 2022): y = gamma * op(x) + beta over the op's output channels.

Every op it wraps has an affine output per channel (linear, convolution, LayerNorm affine), so merging folds
the pair into it: W' = diag(gamma) W, b' = gamma * b + beta. An op without a bias has nowhere for beta
unless a later constant add can take it: after a bias-less patch projection, the position embedding's patch
positions (``shift_target``) receive beta instead, so the merged model keeps the stock model's tensors.

Training: at a LayerNorm the pair trains inside the norm's affine (the norm computes x_hat (gamma w) +
(gamma b + beta)), so nothing is saved beyond what the norm saves anyway. After a linear the pair runs as one
function (:class:`ScaledLinear`) that keeps its own output, not the linear's: the next op keeps that same
tensor anyway (the attention its q, k and v; the MLP's activation its input), so the scale's gradient costs no
activation of its own there. After a convolution the scale's gradient keeps op(x) (one activation per site).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from .wrapped_linear import WrappedModule

# The ops whose output channels SSF can scale and shift, and later fold into.
FOLDABLE = (nn.Linear, nn.Conv2d, nn.LayerNorm)


def output_channels(op: nn.Module) -> int:
    """The number of output channels of a FOLDABLE op."""
    if isinstance(op, nn.Linear):
        return op.out_features
    if isinstance(op, nn.Conv2d):
        return op.out_channels
    return op.weight.numel()  # LayerNorm over the last dimension


# A scale this close to zero has its channel's x W^T kept instead: recovering that from the output divides by
# the scale, which loses precision as the scale shrinks (and all of it at zero).
SMALL_SCALE = 1e-2


class ScaledLinear(torch.autograd.Function):
    """``ScaledLinear.apply(x, W, b, gamma, beta)`` = gamma * (x W^T + b) + beta, for a frozen W and b.

    Forward: x W^T (no bias), then one multiply-add with gamma and gamma b + beta. Backward: the input's
    gradient as grad @ (diag(gamma) W), one product; beta's as sum_tokens(grad); gamma's as
    sum_tokens(grad * (x W^T + b)) = (sum_tokens(grad * y) - beta * sum_tokens(grad)) / gamma, from the output
    y it returned. The next op keeps y anyway (attention's q, k, v are views of qkv's output; the MLP's GELU
    keeps its input), so where it does the pair adds no activation to memory; keeping x W^T, as autograd
    through F.linear and addcmul would, costs one more output-sized tensor per site (ViT-B/16, batch 8, CPU: peak
    RSS 2,174 MiB that way, 1,800 MiB this way; the backprop floor's 1,669, full fine-tuning's 2,956), and two
    more passes over the output.

    When any |gamma| < SMALL_SCALE, or under torch.compile (which cannot branch on values), x W^T is kept and
    gamma's gradient is sum_tokens(grad * x W^T) + b * sum_tokens(grad): exact at any gamma. That check reads
    gamma on the host: free on the CPU, one synchronisation per site and step on an accelerator.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale, shift):
        product = F.linear(x, weight)
        out = torch.addcmul(shift if bias is None else torch.addcmul(shift, bias, scale), product, scale)
        keep_product = ctx.needs_input_grad[3] and (
            torch.compiler.is_compiling() or bool((scale.detach().abs() < SMALL_SCALE).any()))
        ctx.from_output = ctx.needs_input_grad[3] and not keep_product
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight, bias, scale, shift,
                              product if keep_product else None, out if ctx.from_output else None)
        ctx.dtypes = (x.dtype, shift.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, scale, shift, product, out = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad2d = grad.reshape(-1, grad.shape[-1])
        token_sum = grad2d.sum(0)
        grad_x = grad_weight = grad_bias = grad_scale = None
        if needs[0]:
            scaled = (scale[:, None] * weight).to(grad.dtype)
            grad_x = (grad2d @ scaled).view(*grad.shape[:-1], weight.shape[1]).to(ctx.dtypes[0])
        if needs[1]:
            grad_weight = ((grad2d * scale).t() @ x.reshape(-1, x.shape[-1]).to(grad.dtype)).to(weight.dtype)
        if needs[2]:
            grad_bias = (token_sum * scale).to(bias.dtype)
        if needs[3]:
            if ctx.from_output:  # sum(grad * (y - beta)) / gamma: y - beta = gamma (x W^T + b)
                grad_scale = ((grad2d * out.reshape(grad2d.shape)).sum(0) - shift * token_sum) / scale
            else:
                grad_scale = (grad2d * product.reshape(grad2d.shape)).sum(0)
                if bias is not None:
                    grad_scale = grad_scale + bias * token_sum
            grad_scale = grad_scale.to(scale.dtype)
        grad_shift = token_sum.to(ctx.dtypes[1]) if needs[4] else None
        return grad_x, grad_weight, grad_bias, grad_scale, grad_shift


class ScaleShift(WrappedModule):
    """``gamma * op(x) + beta`` over the op's output channels (the last dimension, or dim 1 of a Conv2d).

    Args:
        base_layer: a Linear, Conv2d or LayerNorm (with an affine weight over one dimension).
        init_std: gamma starts at N(1, init_std), beta at N(0, init_std).
        shift_target: for an op without bias only: (a parameter of shape (1, tokens, C), first token index);
            merging adds beta to its tokens from that index on instead of giving the op a bias. For a patch
            projection: the position embedding and its first patch position.
    """

    def __init__(self, base_layer: nn.Module, init_std: float = 0.02,
                 shift_target: tuple[nn.Parameter, int] | None = None):
        if not isinstance(base_layer, FOLDABLE):
            raise BackboneError(
                f"SSF scales the output of a Linear, Conv2d or LayerNorm, got {type(base_layer).__name__}"
            )
        if isinstance(base_layer, nn.LayerNorm) and (
            base_layer.weight is None or len(base_layer.normalized_shape) != 1
        ):
            raise BackboneError("SSF folds into a LayerNorm's affine weight over one dimension; this one has none")
        super().__init__(base_layer)
        self.channel_dim = 1 if isinstance(base_layer, nn.Conv2d) else -1
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        channels = output_channels(base_layer)
        self.init_std = init_std
        self.scale = nn.Parameter(torch.empty(channels, **factory))
        self.shift = nn.Parameter(torch.empty(channels, **factory))
        # Not registered: the target is a backbone parameter owned elsewhere (the model root's pos_embed).
        object.__setattr__(self, "_shift_target", shift_target if base_layer.bias is None else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale, mean=1.0, std=self.init_std)
        nn.init.normal_(self.shift, mean=0.0, std=self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_disabled:
            return self.base_layer(x)
        if isinstance(self.base_layer, nn.LayerNorm):
            return self._folded_norm(x)
        if type(self.base_layer) is nn.Linear:
            base = self.base_layer
            return ScaledLinear.apply(x, base.weight, base.bias, self.scale, self.shift)
        y = self.base_layer(x)
        scale, shift = self.scale, self.shift
        if self.channel_dim == 1:  # (B, C, H, W)
            scale, shift = scale.view(-1, 1, 1), shift.view(-1, 1, 1)
        return torch.addcmul(shift, y, scale)

    def _folded_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The norm with the scale and shift in its affine: gamma * (x_hat w + b) + beta = x_hat (gamma w) +
        (gamma b + beta). The norm's backward, from the input and statistics it saves anyway, then gives the
        scale's gradient; scaling the norm's output instead would save that output a second time."""
        norm = self.base_layer
        bias = self.shift if norm.bias is None else torch.addcmul(self.shift, norm.bias, self.scale)
        # The norm's own forward with the folded affine (timm's LayerNorm may take its fast path).
        return torch.func.functional_call(norm, {"weight": norm.weight * self.scale, "bias": bias}, (x,))

    @torch.no_grad()
    def merged(self) -> nn.Module:
        weight, bias = self.base_weight64()
        scale, shift = self.scale.double(), self.shift.double()
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))  # row / output channel c times gamma_c
        if self._shift_target is not None:
            target, start = self._shift_target
            target[:, start:] += shift.to(target.dtype)  # every token from `start` on had beta added
            return self.fold(weight, None)
        return self.fold(weight, scale * bias + shift)  # an op without bias gains one: the shift needs it

    def extra_repr(self) -> str:
        return "shift folds into the position embedding" if self._shift_target is not None else ""
