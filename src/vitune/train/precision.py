"""Mixed precision (``--amp``): float16 with a gradient scaler on CUDA, bfloat16 on the CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None  # None: full float32

    @classmethod
    def choose(cls, amp: bool, device: torch.device) -> "Precision":
        if not amp:
            return cls(device.type, None)
        return cls(device.type, torch.float16 if device.type == "cuda" else torch.bfloat16)

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """float16 gradients need loss scaling; bfloat16 has float32's range and does not."""
        return torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None
