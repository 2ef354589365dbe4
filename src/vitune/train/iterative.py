"""Training schemes: the plain one (everything trains for ``epochs``) and AdaptFormer's layer-wise iterative one.

A run is a list of :class:`Phase` objects. Each phase gets a fresh optimizer and schedule over its own epochs;
epochs are numbered globally across phases, so a checkpoint needs only the number of finished epochs.

Layer-wise iterative training ('multi', from the AdaptFormer description the project was specified from):
with ``adpnum_option=multi`` and several adapters per block (``ffn_num`` a list), adapter k of every block
trains alone (the others frozen, the head always trainable) for ``epochs`` epochs with a new SGD optimizer
(momentum 0.9), k = 0, 1, ..., n-1, and the whole cycle repeats for ``rounds`` rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from ..api import applied_method
from ..errors import RunError
from ..methods.adaptformer import num_adapters, select_adapter

MULTI = "multi"


def is_iterative(method_config: Mapping[str, Any]) -> bool:
    return method_config.get("adpnum_option") == MULTI


def scheme_defaults(method_config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults a scheme brings; a recipe or a flag still overrides them."""
    return {"opt": "sgd", "momentum": 0.9} if is_iterative(method_config) else {}


def check_rounds(method_config: Mapping[str, Any], rounds: int) -> None:
    if rounds != 1 and not is_iterative(method_config):
        raise RunError(
            "--rounds applies to layer-wise iterative training only (method adaptformer with "
            "--set adpnum_option=multi and ffn_num a list of widths)"
        )


@dataclass(frozen=True)
class Phase:
    index: int
    first_epoch: int  # global epoch number of the phase's first epoch
    epochs: int
    adapter: int | None = None  # which adapter of every block trains; None: all of the method
    round: int | None = None

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.epochs

    def log_fields(self) -> dict[str, int]:
        return {} if self.adapter is None else {"round": self.round, "adapter": self.adapter}


def plan_phases(model: nn.Module, epochs: int, rounds: int) -> list[Phase]:
    """The phases of a run on `model` (with its method applied)."""
    config = vars(applied_method(model).config)
    check_rounds(config, rounds)
    if not is_iterative(config):
        return [Phase(0, 0, epochs)]
    count = num_adapters(model)
    if count < 1:
        raise RunError("layer-wise iterative training needs adapters: set ffn_adapt=true")
    phases = []
    for r in range(rounds):
        for k in range(count):
            index = len(phases)
            phases.append(Phase(index, index * epochs, epochs, adapter=k, round=r))
    return phases


def enter_phase(model: nn.Module, phase: Phase) -> None:
    """Set what trains in `phase` (call before building the phase's optimizer)."""
    if phase.adapter is not None:
        select_adapter(model, phase.adapter)


def finish_phases(model: nn.Module, phases: list[Phase]) -> None:
    """After the last phase: every adapter trainable again, as a loaded adapter would be."""
    if any(p.adapter is not None for p in phases):
        select_adapter(model, None)


def phase_of(phases: list[Phase], epoch: int) -> Phase:
    for phase in phases:
        if phase.first_epoch <= epoch < phase.end_epoch:
            return phase
    raise IndexError(epoch)
