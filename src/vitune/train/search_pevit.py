"""PEViT's hyper-parameter search as a ``vitune search`` strategy (``--strategy pevit``).

KAdaptation's official code (PEViT ``evaluation/kadaptation_clip.py``, the ELEVATER toolkit's sweep) chooses the
learning rate and the weight decay of every data set on train -> val:

- the learning rate over its decades, 1e-6 ... 1e-1 (``np.logspace(-6, -1, 6)``);
- for each learning rate, the weight decay on a log grid of 97 points over 1e-6 ... 1e6: first its 7 decades
  (every 16th point), then a bisection around the best so far with spans of 8, 4, 2 and 1 points, each span
  trying the point that far below and that far above the best (a point is kept only if it scores higher);
- the learning rate whose best weight decay scores highest wins (ties: the first, the smallest learning rate).

Each trial trains 10 epochs in PEViT (``vitune search --point-epochs``, 10 by default for this strategy) and is
scored on the validation split; the winner is retrained on train + val for the run's epochs and tested once.
Differences: vitune scores a trial by its final epoch (PEViT: its best epoch), starts each bisection from the
first decade point (PEViT from an empty peak of score 0, which differs only if every trial scores 0), and a
trial whose loss diverges scores nothing instead of 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import ConfigError, RunError

# A trial's score: the validation accuracy of the run with these values, None when it could not train.
Score = Callable[[dict[str, Any], str], "float | None"]

PEVIT_LRS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PEVIT_POINT_EPOCHS = 10


@dataclass(frozen=True)
class WeightDecayGrid:
    """``points`` weight decays evenly spaced in log10 over [low, high]; the bisection starts from ``coarse``
    of them (the first and last included) and halves its span down to one point."""

    low: float = -6.0
    high: float = 6.0
    points: int = 97
    coarse: int = 7

    def __post_init__(self):
        if self.low >= self.high:
            raise ConfigError(f"--pevit-wd-grid: the low exponent {self.low} must be below the high one {self.high}")
        if self.coarse < 2 or self.points < self.coarse or (self.points - 1) % (self.coarse - 1):
            raise ConfigError(
                f"--pevit-wd-grid: {self.points} points cannot hold {self.coarse} evenly spaced coarse points "
                "(need coarse >= 2 and points - 1 a multiple of coarse - 1, e.g. 97 and 7)"
            )

    @classmethod
    def parse(cls, text: str) -> "WeightDecayGrid":
        """``"LOW,HIGH,POINTS,COARSE"`` (log10 exponents, then counts), e.g. ``"-6,6,97,7"``."""
        parts = text.split(",")
        try:
            low, high, points, coarse = float(parts[0]), float(parts[1]), int(parts[2]), int(parts[3])
        except (ValueError, IndexError):
            raise ConfigError(f"--pevit-wd-grid=LOW,HIGH,POINTS,COARSE expected (e.g. --pevit-wd-grid=-6,6,97,7), got {text!r}") from None
        if len(parts) != 4:
            raise ConfigError(f"--pevit-wd-grid expects four values, got {text!r}")
        return cls(low, high, points, coarse)

    def value(self, index: int) -> float:
        """The weight decay at `index` (as ``np.logspace(low, high, points)[index]``)."""
        import numpy as np

        return float(np.logspace(self.low, self.high, self.points)[index])

    @property
    def coarse_indices(self) -> list[int]:
        step = (self.points - 1) // (self.coarse - 1)
        return list(range(0, self.points, step))

    @property
    def spans(self) -> list[int]:
        span, spans = (self.points - 1) // (self.coarse - 1) // 2, []
        while span > 0:
            spans.append(span)
            span //= 2
        return spans


@dataclass(frozen=True)
class PevitStrategy:
    """The sweep; ``lrs`` and ``wd`` default to PEViT's."""

    lrs: Sequence[float] = PEVIT_LRS
    wd: WeightDecayGrid = WeightDecayGrid()

    name = "pevit"

    def describe(self) -> dict[str, Any]:
        """What search.json records of the strategy."""
        return {
            "name": self.name,
            "lr": list(self.lrs),
            "weight_decay_grid": {"log10_low": self.wd.low, "log10_high": self.wd.high, "points": self.wd.points,
                                  "coarse": self.wd.coarse, "spans": self.wd.spans},
            "source": "PEViT evaluation/kadaptation_clip.py hyperparameter_sweep_lr / hyperparameter_sweep",
        }

    def choose(self, score: Score) -> dict[str, Any]:
        """Run the sweep through `score`; returns the chosen ``{"lr": ..., "weight_decay": ...}``."""
        best: tuple[float, dict[str, Any]] | None = None
        for lr in self.lrs:
            wd, lr_score = self._weight_decay_for(lr, score)
            if lr_score is not None and (best is None or lr_score > best[0]):
                best = (lr_score, {"lr": lr, "weight_decay": wd})
        if best is None:
            raise RunError("vitune search --strategy pevit: no trial trained (every one diverged or failed)")
        return best[1]

    def _weight_decay_for(self, lr: float, score: Score) -> tuple[float, float | None]:
        def trial(index: int, stage: str) -> float | None:
            return score({"lr": lr, "weight_decay": self.wd.value(index)}, f"lr={lr:g}: {stage}")

        peak, peak_score = None, None
        for index in self.wd.coarse_indices:
            value = trial(index, "decades")
            if value is not None and (peak_score is None or value > peak_score):
                peak, peak_score = index, value
        if peak is None:
            return self.wd.value(self.wd.coarse_indices[0]), None
        for span in self.wd.spans:
            left, right = max(peak - span, 0), min(peak + span, self.wd.points - 1)
            for index in [i for i in (left, right) if i != peak]:  # both sides of the peak this span started from
                value = trial(index, f"span {span}")
                if value is not None and value > peak_score:
                    peak, peak_score = index, value
        return self.wd.value(peak), peak_score
