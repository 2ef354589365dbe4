"""Top-1 accuracy on a split. Under DDP each process counts a disjoint slice and the counts are summed, so
the figure is exact (no padded duplicates, as a DistributedSampler would add)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .distributed import DistEnv, all_sum
from .logits import logits_of
from .precision import Precision


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.total if self.total else 0.0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    workers: int = 0,
    env: DistEnv = DistEnv(),
) -> Accuracy:
    """Accuracy of the bare `model` (never its DDP wrapper: ranks run different numbers of batches)."""
    was_training = model.training
    model.eval()
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size)) if env.distributed else dataset
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda"
    )
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with precision.autocast():
            logits = logits_of(model(images))
        correct += (logits.argmax(-1) == labels).sum()
        seen += labels.shape[0]
    model.train(was_training)
    total_correct, total_seen = all_sum([float(correct.item()), float(seen)], env, device)
    return Accuracy(int(total_correct), int(total_seen))
