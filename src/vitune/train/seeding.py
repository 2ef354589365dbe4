"""Every epoch's randomness derives from (seed, epoch, rank) alone, so a resumed run redraws it exactly.

Nothing random is carried across epochs: each epoch starts by re-seeding torch, Python's ``random`` (timm's
augmentations use it) and NumPy, and the data loader's generator (its shuffling and worker seeds).
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (a hash, so (1, 23) and (12, 3) differ)."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed torch, random and NumPy for `epoch` on process `rank`; returns the seed used."""
    value = derive_seed(seed, epoch, rank)
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value % 2**32)
    return value
