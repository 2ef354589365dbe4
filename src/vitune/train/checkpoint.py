"""The resumable state of a run: ``checkpoint/state.safetensors`` (tensors) + ``checkpoint/state.json`` (the rest).

Written after every epoch as one atomic folder swap, so a process killed at any moment leaves the previous
epoch's checkpoint or the new one, never a mix. No pickle: tensors go to safetensors (bit for bit), the
optimizer's non-tensor state and the run's bookkeeping to JSON (Python floats round-trip exactly).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_folder, recover_folder
from ..errors import RunError, RunFailedError

TENSORS = "state.safetensors"
META = "state.json"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Everything a resumed run needs beyond the run's configuration."""

    epochs_done: int = 0  # finished epochs, counted over all phases
    phase: int = 0  # the phase the optimizer state belongs to
    model: dict[str, torch.Tensor] = field(default_factory=dict)  # the trainable tensors (api.trainable_state)
    optimizer: dict[str, Any] | None = None  # optimizer.state_dict()
    scaler: dict[str, Any] | None = None  # GradScaler.state_dict() (float16 AMP on CUDA)
    rows: list[dict[str, Any]] = field(default_factory=list)  # log.jsonl, one row per finished epoch
    train_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    best: dict[str, Any] | None = None  # {"epoch", "accuracy"} with --selection best_eval
    best_model: dict[str, torch.Tensor] | None = None


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def _split_optimizer(sd: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move the optimizer state's tensors into `tensors`; return the JSON-ready rest."""
    state = {}
    for pid, entries in sd["state"].items():
        rest = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{key}"] = _cpu(value)
            else:
                rest[key] = value
        state[str(pid)] = rest
    return {"state": state, "param_groups": sd["param_groups"]}


def _join_optimizer(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(rest) for pid, rest in meta["state"].items()}
    for name, t in tensors.items():
        if name.startswith("optimizer/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = t
    # JSON turned tuples (Adam's betas) into lists; optimizers expect tuples.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(folder: str | Path, state: TrainState) -> None:
    tensors = {f"model/{n}": _cpu(t) for n, t in state.model.items()}
    if state.best_model is not None:
        tensors.update({f"best/{n}": _cpu(t) for n, t in state.best_model.items()})
    meta = {k: v for k, v in asdict(state).items() if k not in ("model", "best_model", "optimizer")}
    meta["format_version"] = FORMAT_VERSION
    meta["optimizer"] = None if state.optimizer is None else _split_optimizer(state.optimizer, tensors)
    meta["has_best_model"] = state.best_model is not None
    text = json.dumps(meta, indent=1, sort_keys=True) + "\n"
    try:
        with atomic_folder(folder, keep=lambda entry: False) as tmp:
            save_file(tensors, str(tmp / TENSORS))
            (tmp / META).write_text(text, encoding="utf-8")
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as a SafetensorError
        raise RunFailedError(
            f"{folder}: the checkpoint of epoch {state.epochs_done} cannot be written ({e}); the previous "
            "checkpoint is intact (free space, then --resume)"
        ) from None


def load_checkpoint(folder: str | Path) -> TrainState | None:
    """The saved state, or None when the run has no checkpoint yet."""
    folder = Path(folder)
    recover_folder(folder)
    if not (folder / META).is_file():
        return None
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TENSORS))
    except (OSError, ValueError, SafetensorError) as e:
        raise RunError(f"{folder}: the checkpoint cannot be read ({e}); remove the folder to restart the run") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(f"{folder}: checkpoint written by a newer vitune")
    model = {n[len("model/"):]: t for n, t in tensors.items() if n.startswith("model/")}
    best_model = {n[len("best/"):]: t for n, t in tensors.items() if n.startswith("best/")}
    return TrainState(
        epochs_done=meta["epochs_done"],
        phase=meta["phase"],
        model=model,
        optimizer=None if meta["optimizer"] is None else _join_optimizer(meta["optimizer"], tensors),
        scaler=meta["scaler"],
        rows=meta["rows"],
        train_seconds=meta["train_seconds"],
        peak_rss_mib=meta["peak_rss_mib"],
        best=meta["best"],
        best_model=best_model if meta["has_best_model"] else None,
    )
