"""The base of every module vitune inserts into a backbone, and the holder of tensors several of them share.

These are the core of the layers: ``layers/`` builds on this file and never imports ``methods/``.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
from torch import nn

from ..errors import NotMergeableError


class VituneModule(nn.Module):
    """A module vitune inserted into a backbone.

    ``wrapped`` names the children that are the backbone's own modules (for example the linear layer a
    wrapper computes around); everything else this module holds belongs to the method.

    ``adapter_disabled`` (set by ``vitune.disable_adapter``): when true, ``forward`` computes only the
    backbone's part -- a wrapper calls the module it wraps and adds nothing.
    """

    wrapped: ClassVar[tuple[str, ...]] = ()
    adapter_disabled: bool = False

    def merged(self) -> nn.Module | None:
        """The backbone module that replaces this one after merging (None: remove this module)."""
        raise NotMergeableError(f"{type(self).__name__} has no merge rule")


class SharedTensors(VituneModule):
    """Named tensors read by many inserted modules (ARC's projections, KAdaptation's slow weights, Compacter's
    rules), held once on the model root so the state_dict and the adapter file have each of them once.

    The modules that read them keep an unregistered reference to this holder. After merging they have
    folded the tensors into the backbone's weights, so the holder is simply removed.

    Args:
        tensors: name -> initial value (already initialised by the caller).
        trainable: register them as parameters (True) or as frozen buffers, which are still saved (False).
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], trainable: bool = True):
        super().__init__()
        for name, value in tensors.items():
            if trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, name)

    def merged(self) -> None:
        return None
