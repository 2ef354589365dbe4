"""KAdaptation (He et al., AAAI 2023): a sum of Kronecker products added to the query and value weights.

For each of q and v, H = sum_{i=1..n} A_i kron B_i (D x D) with rank-one factors A_i = a_i b_i^T (n x n,
"slow" weights, shared by every block, one set for q and one for v) and B_i = u_i v_i^T (D/n x D/n,
"fast" weights, per block, separate for q and v). The update is

    q <- q + kappa * Dropout(H_q)(x) + bias,    v <- v + kappa * Dropout(H_v)(x) + bias,

with one zero-initialised bias per block shared by q and v, applied to the q and v slices of timm's
fused qkv output (before attention's 1/sqrt(d) scaling), so it is a true weight delta:
W_q' = W_q + kappa * H_q^T, b_q' = b_q + bias (same for v). Separate q, k and v linears (Hugging Face's
models) are joined into one for it, so the layer, its parameters and its merge are the fused case's.

The layer, its fast factored form and its merge rule live in ``layers/kadaptation.py``; the slow weights
are held once on the model root (``kadaptation_shared``; one set per width, ``kadaptation_shared_<width>``,
on a Swin whose stages differ in width).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..backbones.targets import joint_linear
from ..errors import ConfigError
from ..layers.kadaptation import KAdaptationLinear, kadaptation_rules
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class KAdaptationConfig(MethodConfig):
    n: int = option(32, "number of Kronecker terms and size of the shared A_i (n x n); the width must divide by n")
    scale: float = option(160.0, "kappa, multiplying the update (160 in the official code: 128 / 4 * 5)")
    dropout: float = option(0.5, "dropout on the update matrix H (training only)")

    def __post_init__(self):
        self.require(self.n > 0, "n", f"must be positive, got {self.n}")
        self.require(self.scale != 0.0, "scale", "must not be 0 (the update would do nothing and never learn)")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register_method
class KAdaptation(Method):
    name = "kadaptation"
    Config = KAdaptationConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        for width in places.widths:
            if width % cfg.n:
                raise ConfigError(f"kadaptation.n: the width {width} is not a multiple of n={cfg.n}")
        first = model.get_submodule(places.blocks[0].fc1)
        # One set of slow weights per width (per stage on a Swin), like ARC's per-stage projections.
        shared = {
            width: kadaptation_rules(cfg.n, device=first.weight.device, dtype=first.weight.dtype)
            for width in places.widths
        }
        for block in places.blocks:
            path, parts = joint_linear(model, block, ("q", "v"))
            base = model.get_submodule(path)
            rules = shared[places.width(block)]
            layer = KAdaptationLinear(base, rules, parts["q"], parts["v"], cfg.n, cfg.scale, cfg.dropout)
            replace_module(model, path, layer)
        for width, rules in shared.items():
            model.add_module(places.shared_name("kadaptation_shared", width), rules)
