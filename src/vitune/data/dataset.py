"""The torch Dataset over a checked list of samples: items are ``(transform(RGB image), label)``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import load_rgb
from .sample import Sample


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one item of one epoch, well spread even for neighbouring (seed, epoch, index)."""
    state = np.random.SeedSequence([seed % 2**64, epoch % 2**64, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


class ImageListDataset(Dataset):
    """Images opened with PIL and converted to RGB, then passed through `transform`.

    Args:
        samples: the checked samples of one split (:meth:`TaskData.samples` order).
        transform: applied to each PIL image; None returns the image itself.
        seed: None: a random transform draws from the global generators, as usual. An integer: item `i` of
            epoch `e` draws from generators seeded with (seed, e, i) alone, so its augmentation does not
            depend on workers, processes, batch order or a resume; call :meth:`set_epoch` before each
            epoch's iterator is created (not with ``persistent_workers``, whose copies keep their epoch).
            The global generators are left as they were.

    An image that cannot be read raises :class:`vitune.errors.DataError` naming the image and the split file
    and line that list it (a DataLoader worker passes it on as a DataError).
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Any], Any] | None = None,
                 seed: int | None = None):
        self._samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.targets = [sample.label for sample in self._samples]  # for samplers that balance classes

    @property
    def samples(self) -> list[tuple[Path, int]]:
        return [(sample.path, sample.label) for sample in self._samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = range(len(self._samples))[index]  # a negative index seeds as its positive twin
        sample = self._samples[index]
        image = load_rgb(sample.path, sample.where)
        if self.transform is not None:
            image = self._transformed(image, index)
        return image, sample.label

    def _transformed(self, image: Any, index: int) -> Any:
        if self.seed is None:
            return self.transform(image)
        seed = item_seed(self.seed, self.epoch, index)
        # timm's random crop draws from Python's random, torchvision's flip from torch, RandAugment from numpy
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                return self.transform(image)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
