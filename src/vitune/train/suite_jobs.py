"""What ``vitune suite`` does for one task and seed: train a run (:class:`TrainJob`) or search one
(:class:`SearchJob`: ``vitune search`` into the run's folder, the winner tested once).

A job knows when its folder is finished, the test accuracy it reports, how to run in this process, and the
``vitune`` command line that runs it in a worker process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .run_folder import RESULTS
from .runner import train
from .search import SEARCH_FILE, make_strategy, run_search
from .search_pevit import WeightDecayGrid


def _json_arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class TrainJob:
    """One ``vitune train`` run: finished when its ``results.json`` is written."""

    command = "train"

    def check(self, recipe: str | None) -> None:
        return None

    def describe(self) -> None:
        return None

    def finished(self, folder: Path) -> bool:
        return (folder / RESULTS).is_file()

    def accuracy(self, folder: Path) -> float | None:
        return json.loads((folder / RESULTS).read_text(encoding="utf-8")).get("accuracy")

    def run(self, flags: Mapping[str, Any], folder: Path) -> float:
        return train(flags, folder, resume=True).results["accuracy"]

    def argv(self, folder: Path) -> list[str]:
        return ["train", "--out", str(folder), "--resume"]


@dataclass(frozen=True)
class SearchJob:
    """One ``vitune search`` per task and seed: points on the validation split, the winner tested once.

    `grid`, `strategy`, `point_epochs` and `wd_grid` are ``vitune search``'s (None: the recipe's search)."""

    grid: dict[str, list[Any]] | None = None
    strategy: str | None = None
    point_epochs: int | None = None
    wd_grid: WeightDecayGrid | None = None

    command = "search"

    def check(self, recipe: str | None) -> None:
        """The search settings are valid with the suite's `recipe` (before anything trains)."""
        make_strategy(self.grid, self.strategy, recipe, self.wd_grid)

    def describe(self) -> dict[str, Any]:
        wd = self.wd_grid
        return {"grid": self.grid, "strategy": self.strategy, "point_epochs": self.point_epochs,
                "pevit_wd_grid": None if wd is None else [wd.low, wd.high, wd.points, wd.coarse]}

    def _document(self, folder: Path) -> dict[str, Any] | None:
        path = folder / SEARCH_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def finished(self, folder: Path) -> bool:
        document = self._document(folder)
        return document is not None and document.get("final") is not None

    def accuracy(self, folder: Path) -> float | None:
        return self._document(folder)["final"]["test_accuracy"]

    def run(self, flags: Mapping[str, Any], folder: Path) -> float:
        document = run_search(folder, self.grid, flags, strategy=self.strategy, point_epochs=self.point_epochs,
                              wd_grid=self.wd_grid)
        return document["final"]["test_accuracy"]

    def argv(self, folder: Path) -> list[str]:
        argv = ["search", str(folder)]
        for key, values in (self.grid or {}).items():
            argv += ["--grid", f"{key}=" + ",".join(_json_arg(v) for v in values)]
        if self.strategy:
            argv += ["--strategy", self.strategy]
        if self.point_epochs is not None:
            argv += ["--point-epochs", str(self.point_epochs)]
        if self.wd_grid is not None:
            wd = self.wd_grid
            argv += [f"--pevit-wd-grid={wd.low},{wd.high},{wd.points},{wd.coarse}"]
        return argv
