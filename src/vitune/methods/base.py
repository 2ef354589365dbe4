"""The contract every method follows.

A method is a small class registered under a name. It has a ``Config`` dataclass, and ``inject`` puts its
modules into a backbone by module surgery, using the backbone family's map of places. Everything else --
freezing, counting, saving, loading and merging -- is shared code that reads the model's structure:

- parameters held by a :class:`VituneModule` (outside the backbone children it wraps) belong to the method;
- a method may also claim backbone parameters as its own (BitFit's biases) or train some alongside
  (Consolidator's LayerNorms), through ``claimed_parameters`` and ``extra_parameters``;
- the classifier head always trains;
- what trains is what is saved;
- ``VituneModule.merged()`` returns the plain backbone module that computes the same function.

``VituneModule`` itself lives in ``layers/base.py`` (the layers never import the methods); it is re-exported
here.
"""

from __future__ import annotations

from typing import ClassVar, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..backbones import ModelPlaces
from ..errors import BackboneError
from ..layers.base import VituneModule
from .config import MethodConfig

__all__ = [
    "Method", "VituneModule", "method_buffers", "method_parameters", "rename_sublayer_adapters",
    "require_branch_ends", "vitune_modules",
]


class Method:
    """One parameter-efficient method. Subclasses set ``name`` and ``Config`` and implement ``inject``."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    mergeable: ClassVar[bool] = True
    # Shown when merging is refused: why the method's update cannot be folded into the weights.
    not_mergeable_reason: ClassVar[str] = ""
    # Whether vitune.disable_adapter can run the plain backbone: every inserted module can skip its part,
    # and the backbone parameters the method trains in place have their original values kept.
    can_disable: ClassVar[bool] = True
    cannot_disable_reason: ClassVar[str] = ""

    def __init__(self, config: MethodConfig):
        self.config = config
        self.places: ModelPlaces | None = None  # set by vitune.apply before inject

    def inject(self, model: nn.Module, places: ModelPlaces) -> None:
        """Insert the method's modules into `model` (its backbone parameters are already frozen).

        Check the config against the model before the first replacement, so a bad config leaves the model
        as it was."""

    def claimed_parameters(self, model: nn.Module) -> Iterable[str]:
        """Names of backbone parameters that are this method's own trainable set (BitFit's biases)."""
        return ()

    def extra_parameters(self, model: nn.Module) -> Iterable[str]:
        """Names of backbone parameters trained alongside the method but not counted as the method."""
        return ()

    def is_mergeable(self) -> bool:
        return self.mergeable

    def head_parameter_names(self, model: nn.Module) -> list[str]:
        """Names of the classifier head's parameters (they always train)."""
        return self.places.head_parameter_names(model)

    def to_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors written to disk, from the trained state (a method may store a compact form)."""
        return state

    def from_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of ``to_storage``: the state to load into the model."""
        return state


def require_branch_ends(places: ModelPlaces, branches: Sequence[str], method: str) -> None:
    """Check that every block names the ends of the residual branches (``attn_branch``, ``mlp_branch``) a
    method wraps: an empty path would name the model itself."""
    for block in places.blocks:
        missing = [b for b in branches if not getattr(block, b)]
        if missing:
            raise BackboneError(
                f"{method}: the {places.family} map gives no {missing[0]} for {block.block}; the method adds its "
                "adapters where that residual branch joins the residual stream"
            )


def rename_sublayer_adapters(state: dict[str, torch.Tensor], places: ModelPlaces) -> dict[str, torch.Tensor]:
    """Tensor names of adapter files written when the bottleneck adapters wrapped a block's sublayer
    (``blocks.0.mlp.adapters.0.down.weight``), renamed to where they now sit, the branch end
    (``blocks.0.drop_path2.adapters.0.down.weight``); also inside a prompt wrapper (``blocks.0.block.mlp...``).
    Names already current pass unchanged."""
    renamed = dict(state)
    for block in places.blocks:
        for sublayer, branch_end in ((block.mlp, block.mlp_branch), (block.attn, block.attn_branch)):
            if not branch_end:
                continue
            old, new = sublayer[len(block.block):], branch_end[len(block.block):]  # ".mlp", ".drop_path2"
            for wrapper in ("", ".block"):  # PromptedBlock holds the block as ``block``
                prefix = f"{block.block}{wrapper}{old}.adapters."
                for name in [n for n in renamed if n.startswith(prefix)]:
                    renamed[f"{block.block}{wrapper}{new}.adapters.{name[len(prefix):]}"] = renamed.pop(name)
    return renamed


def _owned_by_method(model: nn.Module, tensor_name: str) -> bool:
    """True when the innermost VituneModule on the tensor's path does not reach it through a wrapped child."""
    owned = False
    module = model
    for part in tensor_name.split(".")[:-1]:
        if isinstance(module, VituneModule) and part in module.wrapped:
            owned = False
        module = module._modules[part]
        if isinstance(module, VituneModule):
            owned = True
    return owned


def method_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The parameters the method's own modules hold."""
    for name, p in model.named_parameters():
        if _owned_by_method(model, name):
            yield name, p


def method_buffers(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, b in model.named_buffers():
        if _owned_by_method(model, name):
            yield name, b


def vitune_modules(model: nn.Module) -> list[tuple[str, VituneModule]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, VituneModule)]
