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
"""

from __future__ import annotations

from typing import ClassVar, Iterable, Iterator

import torch
from torch import nn

from ..backbones import ModelPlaces
from ..errors import NotMergeableError
from .config import MethodConfig


class VituneModule(nn.Module):
    """A module vitune inserted into a backbone.

    ``wrapped`` names the children that are the backbone's own modules (for example the linear layer a
    wrapper computes around); everything else this module holds belongs to the method.
    """

    wrapped: ClassVar[tuple[str, ...]] = ()

    def merged(self) -> nn.Module | None:
        """The backbone module that replaces this one after merging (None: remove this module)."""
        raise NotMergeableError(f"{type(self).__name__} has no merge rule")


class Method:
    """One parameter-efficient method. Subclasses set ``name`` and ``Config`` and implement ``inject``."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    mergeable: ClassVar[bool] = True
    # Shown when merging is refused: why the method's update cannot be folded into the weights.
    not_mergeable_reason: ClassVar[str] = ""

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
        return [
            f"{head}.{n}" for head in self.places.heads for n, _ in model.get_submodule(head).named_parameters()
        ]

    def to_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors written to disk, from the trained state (a method may store a compact form)."""
        return state

    def from_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of ``to_storage``: the state to load into the model."""
        return state


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
