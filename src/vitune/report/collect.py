"""Finding the runs under the report's roots: every ``results.json``, read and labelled.

Only runs evaluated on a test split enter the tables: a search's grid points (scored on ``val200``) and runs
evaluated on another split are counted as left out, with the reason. A search's final run (``final/`` beside
its ``search.json``) carries the search's choice: the values chosen on the validation split and their score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import RunError

TEST_SPLITS = ("test", "test_meta.list")


@dataclass(frozen=True)
class RunRecord:
    folder: Path
    root: Path
    results: dict[str, Any]
    search: dict[str, Any] | None = None  # search.json when this run is a search's final run

    @property
    def chosen(self) -> dict[str, Any] | None:
        """The values the search chose on validation, with their validation accuracy and the splits."""
        if not self.search or not self.search.get("choice"):
            return None
        choice = self.search["choice"]
        return {"values": choice["values"], "val_accuracy": choice["val_accuracy"],
                "strategy": (self.search.get("strategy") or {}).get("name", "grid"),
                "val_split": self.search["splits"]["val"]}

    @property
    def task(self) -> str:
        return self.results["dataset"]

    @property
    def seed(self) -> int:
        return self.results["seed"]

    @property
    def backbone(self) -> str:
        """What the backbone started from: its weights' identity."""
        r = self.results
        if r.get("weights_sha256"):
            return f"{r['model']} weights sha256 {r['weights_sha256'][:12]}"
        if r.get("pretrained"):
            tag = r.get("pretrained_tag")
            return f"{r['model']} timm pretrained" + (f" ({tag})" if tag else "")
        return f"{r['model']} random init"  # seeded by the run's seed


@dataclass
class Collected:
    runs: list[RunRecord]
    left_out: list[tuple[Path, str]]  # (results file, why)


def collect(roots: Sequence[str | Path]) -> Collected:
    runs: list[RunRecord] = []
    left_out: list[tuple[Path, str]] = []
    for given in roots:
        root = Path(given)
        if not root.is_dir():
            raise RunError(f"report: {root} is not a folder")
        for path in sorted(root.rglob("results.json")):
            try:
                results = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise RunError(f"{path}: cannot be read ({e})") from None
            if not isinstance(results, dict) or "accuracy" not in results or "dataset" not in results:
                left_out.append((path, "not a vitune results file"))
                continue
            if results.get("eval_split") not in TEST_SPLITS:
                left_out.append((path, f"evaluated on {results.get('eval_split')!r}, not a test split"))
                continue
            runs.append(RunRecord(path.parent, root, results, _search_of(path.parent)))
    if not runs:
        raise RunError(f"report: no finished run evaluated on a test split under {', '.join(map(str, roots))}")
    return Collected(runs, left_out)


def _search_of(folder: Path) -> dict[str, Any] | None:
    """The search.json of the search whose final run `folder` is, else None."""
    from ..train.search import FINAL, SEARCH_FILE

    path = folder.parent / SEARCH_FILE
    if folder.name != FINAL or not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot be read ({e})") from None
    return document if isinstance(document, dict) else None
