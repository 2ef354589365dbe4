"""Consolidator (Hao et al., ICLR 2023): parallel grouped branches on every linear layer of every block.

Each linear y = W0 x + b0 gains one branch per entry g of ``fc_groups``:
    y = W0 x + b0 + sum_g DropPath(GroupFC_g(Shuffle_g(x)))
with GroupFC_g a grouped linear (g diagonal blocks, bias) and Shuffle_g an optional channel shuffle. The
branches are linear, so they merge into one dense matrix: W = W0 + sum_g W_eff,g and b = b0 + sum_g b_g
(the layer and its merge rule: ``layers/consolidator.py``). As in the official code, the wrapped layers' own
biases and all LayerNorms train alongside.

Storage follows the paper's stage-1 consolidation: the branch biases are folded into the (trained anyway)
origin biases, so the adapter file holds the group weights, one bias per linear, the LayerNorms and the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..backbones import WHOLE_LINEAR_ROLES
from ..backbones.targets import linear_targets
from ..errors import ConfigError
from ..layers.consolidator import ConsolidatorLinear
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class ConsolidatorConfig(MethodConfig):
    fc_groups: tuple[int, ...] = option(
        (384,), "group count of each parallel branch (one branch per entry); each must divide the layer widths"
    )
    rep_drop: float = option(
        0.0, "DropPath rate on each branch output, per sample, training only (the VTAB recipes set it per dataset)"
    )
    with_channel_shuffle: bool = option(
        False, "shuffle the input channels before each grouped branch (off in the official training runs)"
    )
    rep_bias: bool = option(True, "give each branch its own bias")
    train_bias: bool = option(True, "also train the biases of the wrapped linear layers (as the official code)")
    train_norm: bool = option(True, "also train every LayerNorm of the backbone (as the official code)")
    targets: tuple[str, ...] = option(
        WHOLE_LINEAR_ROLES, "linear layers wrapped in every block: qkv, proj, fc1, fc2"
    )
    fold_biases_on_save: bool = option(
        True,
        "store the branch biases folded into the layer biases (the paper's stage-1 consolidation, a smaller "
        "file); a reloaded model then computes the same function, but with rep_drop > 0 further training "
        "drops the folded part no more",
    )

    def __post_init__(self):
        self.require(len(self.fc_groups) > 0, "fc_groups", "needs at least one group count")
        self.require(
            all(g > 0 for g in self.fc_groups), "fc_groups", f"must be positive, got {list(self.fc_groups)}"
        )
        self.require(0.0 <= self.rep_drop < 1.0, "rep_drop", f"must be in [0, 1), got {self.rep_drop}")
        self.require(len(self.targets) > 0, "targets", "needs at least one role")
        bad = [t for t in self.targets if t not in WHOLE_LINEAR_ROLES]
        self.require(not bad, "targets", f"roles are {list(WHOLE_LINEAR_ROLES)}, got {bad}")


@register_method
class Consolidator(Method):
    name = "consolidator"
    Config = ConsolidatorConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        paths = list(linear_targets(model, places, cfg.targets, join=True))  # separate q, k, v: joined, as fused
        for path in paths:  # check every target before the first replacement
            base = model.get_submodule(path)
            for g in cfg.fc_groups:
                if base.in_features % g or base.out_features % g:
                    raise ConfigError(
                        f"consolidator.fc_groups: {g} groups do not divide {path} "
                        f"({base.in_features} -> {base.out_features})"
                    )
        for path in paths:
            base = model.get_submodule(path)
            layer = ConsolidatorLinear(base, cfg.fc_groups, cfg.rep_drop, cfg.with_channel_shuffle, cfg.rep_bias)
            replace_module(model, path, layer)

    @staticmethod
    def _layers(model: nn.Module) -> list[tuple[str, ConsolidatorLinear]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, ConsolidatorLinear)]

    def extra_parameters(self, model: nn.Module) -> Iterable[str]:
        names = []
        if self.config.train_bias:
            names += [
                f"{path}.base_layer.bias" for path, m in self._layers(model) if m.base_layer.bias is not None
            ]
        if self.config.train_norm:
            for path, m in model.named_modules():
                if isinstance(m, nn.LayerNorm):
                    names += [f"{path}.{n}" for n, _ in m.named_parameters(recurse=False)]
        return [n for n in names if self.places.trainable_in_backbone(n)]

    def _foldable(self, model: nn.Module, state: dict) -> Iterable[tuple[str, list[str]]]:
        """(origin bias name, branch bias names) of each layer whose branch biases fold into a saved bias."""
        for path, layer in self._layers(model):
            origin = f"{path}.base_layer.bias"
            branch_biases = [
                f"{path}.branches.{k}.bias" for k, b in enumerate(layer.branches) if b.bias is not None
            ]
            if branch_biases and origin in state:
                yield origin, branch_biases

    def to_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.config.fold_biases_on_save:
            return state
        stored = dict(state)
        for origin, branch_biases in self._foldable(model, state):
            folded = state[origin].detach().double()
            for name in branch_biases:
                folded = folded + stored.pop(name).detach().double()
            stored[origin] = folded.to(state[origin].dtype)
        return stored

    def from_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.config.fold_biases_on_save:
            return state
        loaded = dict(state)
        for origin, branch_biases in self._foldable(model, state):
            for name in branch_biases:
                if name not in loaded:  # folded into the origin bias when saved
                    loaded[name] = torch.zeros_like(state[origin])
        return loaded
