"""AdaptFormer (Chen et al., NeurIPS 2022): a ReLU bottleneck parallel to each block's MLP.

    X2 = X1 + DP(MLP(LN2(X1))) + s * a(X1),   a(Z) = Dropout(ReLU(Z W_d^T + b_d)) W_u^T + b_u

The adapter reads the residual stream after attention, X1, not LN2(X1): the official code's semantics (the
paper's figure shows a LayerNorm; the author says the code is right). Its output joins the residual stream
outside the MLP branch's drop path (and layer scale, which the official block lacks). Sequential option:
H = DP(MLP(LN2(X1))), X2 = X1 + H + a(H). Config keys are named like the official ``tuning_config``
(ffn_option, ffn_adapter_scalar, ffn_num, vpt_on, ...).

Surgery, without copying timm's Block (``layers/branch_adapters.py``): the end of the MLP branch (timm's
drop_path2) is wrapped by a module that adds the adapters' outputs to what joins the residual stream; for the
parallel option an :class:`InputTap` on norm2 hands it X1, the input norm2 saw in the same block call.

Layer-wise iterative training ("multi"): several adapters per block (``ffn_num`` as a list), trained one
at a time with :func:`select_adapter`; :func:`num_adapters` says how many there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError, VituneError
from ..layers.bottleneck import linear_bottleneck
from ..layers.branch_adapters import BranchAdapters, InputTap, ParallelAdapters, SequentialAdapters
from ..layers.prompts import PromptedBlock
from ..surgery import replace_module
from .base import Method, rename_sublayer_adapters, require_branch_ends
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class AdaptFormerConfig(MethodConfig):
    ffn_adapt: bool = option(True, "insert the MLP adapters (false: prompts and head only)")
    ffn_num: int | tuple[int, ...] = option(
        64, "bottleneck width (64 in the paper; the VTAB numbers others report use 8); a list puts one "
        "adapter of each width in every block, for layer-wise iterative training"
    )
    ffn_option: Literal["parallel", "sequential"] = option(
        "parallel", "parallel: a(X1) added beside the MLP; sequential: H + a(H) on the MLP output H"
    )
    ffn_adapter_scalar: str | float = option(
        "0.1", "the scale s: a number (string or float), or 'learnable_scalar' (a trained scalar starting at 1)"
    )
    ffn_adapter_layernorm_option: Literal["none", "in", "out"] = option(
        "none", "LayerNorm on the adapter input ('in') or on its scaled output ('out')"
    )
    ffn_adapter_init_option: Literal["lora"] = option(
        "lora", "down projection kaiming-uniform (a=sqrt(5)), up projection and biases zero"
    )
    dropout: float = option(0.1, "dropout on the bottleneck activations (training only)")
    d_model: int | None = option(None, "backbone width, checked against the model when given")
    vpt_on: bool = option(False, "also learn deep prompt tokens (new ones before each block, dropped after)")
    vpt_num: int = option(1, "prompt tokens per block when vpt_on")
    adpnum_option: Literal["single", "multi"] = option(
        "single", "the guide's training scheme: 'single' trains every adapter together; 'multi' (layer-wise "
        "iterative training) trains one adapter of each block at a time (see select_adapter) and needs a list "
        "of bottleneck widths in ffn_num"
    )
    head: Literal["linear", "bn_linear"] = option(
        "linear", "bn_linear: BatchNorm1d(affine=False, eps=1e-6) before the linear head (the MAE-style "
        "head of AdaptFormer's image recipe); its running statistics are saved with the head"
    )

    def __post_init__(self):
        if isinstance(self.ffn_num, list):
            self.ffn_num = tuple(self.ffn_num)
        widths = self.bottlenecks
        self.require(len(widths) > 0, "ffn_num", "needs at least one bottleneck width")
        self.require(all(isinstance(w, int) and w > 0 for w in widths), "ffn_num",
                     f"widths must be positive integers, got {self.ffn_num!r}")
        if isinstance(self.ffn_adapter_scalar, str) and self.ffn_adapter_scalar != "learnable_scalar":
            try:
                float(self.ffn_adapter_scalar)
            except ValueError:
                self.require(False, "ffn_adapter_scalar",
                             f"must be a number or 'learnable_scalar', got {self.ffn_adapter_scalar!r}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        self.require(self.vpt_num > 0, "vpt_num", f"must be positive, got {self.vpt_num}")
        self.require(self.adpnum_option == "single" or isinstance(self.ffn_num, tuple), "adpnum_option",
                     "'multi' trains several adapters per block one at a time: give ffn_num as a list of widths")
        self.require(self.d_model is None or self.d_model > 0, "d_model", f"must be positive, got {self.d_model}")

    @property
    def bottlenecks(self) -> tuple[int, ...]:
        return tuple(self.ffn_num) if isinstance(self.ffn_num, (tuple, list)) else (self.ffn_num,)

    @property
    def learnable_scale(self) -> bool:
        return self.ffn_adapter_scalar == "learnable_scalar"

    @property
    def scale(self) -> float:
        return 1.0 if self.learnable_scale else float(self.ffn_adapter_scalar)


@register_method
class AdaptFormer(Method):
    name = "adaptformer"
    Config = AdaptFormerConfig
    mergeable = False
    not_mergeable_reason = (
        "its bottleneck has a ReLU between the down and up projections, so the branch is not linear in the "
        "input and cannot be folded into the backbone's weights; it adds inference cost"
    )

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        dim = places.embed_dim
        if cfg.d_model is not None and cfg.d_model != dim:
            raise ConfigError(f"AdaptFormerConfig.d_model: {cfg.d_model} does not match the backbone's width {dim}")
        ref = model.get_submodule(places.blocks[0].fc1).weight
        factory = {"device": ref.device, "dtype": ref.dtype}
        if cfg.ffn_adapt:
            require_branch_ends(places, ("mlp_branch",), self.name)
        if cfg.vpt_on and places.no_prompts:
            raise ConfigError(f"AdaptFormerConfig.vpt_on: prompts do not apply to the {places.family} family: "
                              f"{places.no_prompts}")
        for block in places.blocks:
            if cfg.ffn_adapt:
                adapters = [
                    linear_bottleneck(
                        places.width(block), width, init=cfg.ffn_adapter_init_option, act="relu", dropout=cfg.dropout,
                        scale=cfg.scale, learnable_scale=cfg.learnable_scale,
                        layernorm=cfg.ffn_adapter_layernorm_option, **factory,
                    )
                    for width in cfg.bottlenecks
                ]
                end = model.get_submodule(block.mlp_branch)
                if cfg.ffn_option == "parallel":
                    # In the pre-norm layout norm2's input is X1, the residual stream after attention.
                    tap = InputTap(model.get_submodule(block.norm2))
                    replace_module(model, block.norm2, tap)
                    wrapper = ParallelAdapters(end, adapters, tap)
                else:
                    wrapper = SequentialAdapters(end, adapters)
                replace_module(model, block.mlp_branch, wrapper)
            if cfg.vpt_on:
                # AdaptFormer's prompts: xavier-uniform on a (1, vpt_num, D) tensor.
                bound = math.sqrt(6.0 / ((cfg.vpt_num + 1) * dim))
                wrapper = PromptedBlock(
                    model.get_submodule(block.block), num_prefix_tokens=places.num_prefix_tokens, dim=dim,
                    insert=cfg.vpt_num, remove=cfg.vpt_num, bound=bound, **factory,
                )
                replace_module(model, block.block, wrapper)
        if cfg.head == "bn_linear":
            for head in places.heads:
                linear = model.get_submodule(head)
                if isinstance(linear, nn.Linear):
                    norm = nn.BatchNorm1d(linear.in_features, affine=False, eps=1e-6, **factory)
                    replace_module(model, head, nn.Sequential(norm, linear))

    def from_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Files saved when the adapters wrapped the sublayer name them there; same tensors, new place.
        return rename_sublayer_adapters(state, self.places)


def _adapter_groups(model: nn.Module) -> tuple[nn.Module, AdaptFormer, list[BranchAdapters]]:
    """The bare model (out of a compile/DDP wrapper), its AdaptFormer, and the modules holding the adapters."""
    from ..api import applied_method, unwrap  # the public accessors (api imports the methods package)

    model = unwrap(model)
    method = applied_method(model)
    if not isinstance(method, AdaptFormer):
        found = method.name if method is not None else "none"
        raise VituneError(f"this needs a model with method 'adaptformer' applied (found: {found})")
    return model, method, [m for m in model.modules() if isinstance(m, BranchAdapters)]


def num_adapters(model: nn.Module) -> int:
    """How many adapters each block of an AdaptFormer model has (0 when ffn_adapt is off).

    Args:
        model: a model with method 'adaptformer' applied.
    """
    _, _, groups = _adapter_groups(model)
    return len(groups[0].adapters) if groups else 0


def select_adapter(model: nn.Module, index: int | None) -> None:
    """Layer-wise iterative training: make adapter `index` of every block trainable, freeze the others.

    The classifier head stays trainable; prompts (vpt_on) are left as they are. Build a new optimizer after
    calling this: it changes ``requires_grad``.

    Args:
        model: a model with method 'adaptformer' applied (or its compile/DDP wrapper).
        index: which adapter of each block trains (0-based); None makes every adapter trainable again.
    """
    model, method, groups = _adapter_groups(model)
    count = len(groups[0].adapters) if groups else 0
    if index is not None and not 0 <= index < count:
        raise VituneError(f"adapter index {index} is out of range: each block has {count} adapters")
    for group in groups:
        for k, adapter in enumerate(group.adapters):
            adapter.requires_grad_(index is None or k == index)
    params = dict(model.named_parameters())
    for name in method.head_parameter_names(model):
        params[name].requires_grad_(True)
