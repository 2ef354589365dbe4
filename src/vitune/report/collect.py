"""Finding the runs under the report's roots: every ``results.json``, read and labelled.

Only runs evaluated on a test split enter the tables: a search's grid points (scored on ``val200``) and runs
evaluated on another split are counted as left out, with the reason.
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
            runs.append(RunRecord(path.parent, root, results))
    if not runs:
        raise RunError(f"report: no finished run evaluated on a test split under {', '.join(map(str, roots))}")
    return Collected(runs, left_out)
