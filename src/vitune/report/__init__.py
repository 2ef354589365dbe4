"""``vitune report``: tables and plots from run folders (``results.json`` files found under the roots).

    write_report(["runs/lora", "runs/repadapter"], out="runs/report")

writes ``report.md``, ``report.csv``, ``report.json`` and ``accuracy_vs_params.png``, ``per_task.png``.
collect.py finds the runs, tables.py computes the numbers and flags, render.py writes text, plots.py PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_json, atomic_write_text
from .collect import Collected, RunRecord, collect
from .tables import Row, as_dict, build_rows

__all__ = ["Collected", "Row", "RunRecord", "Written", "build_rows", "collect", "write_report"]


@dataclass(frozen=True)
class Written:
    folder: Path
    files: list[Path]
    runs: int
    rows: list[Row]


def write_report(roots: Sequence[str | Path], out: str | Path | None = None) -> Written:
    """Read every results.json under `roots`; write the report into `out` (default: the first root)."""
    from . import plots, render

    collected = collect(roots)
    rows = build_rows(collected.runs)
    folder = Path(out) if out is not None else Path(roots[0])
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [plots.accuracy_vs_parameters(rows, folder / "accuracy_vs_params.png"),
                plots.per_task_bars(rows, folder / "per_task.png")]
    names = [str(r) for r in roots]
    files = [
        atomic_write_text(folder / "report.md", render.markdown(rows, collected, names, pictures)),
        atomic_write_text(folder / "report.csv", render.csv_text(rows)),
        atomic_write_json(folder / "report.json", {"roots": names, "rows": [as_dict(r) for r in rows]}),
    ]
    return Written(folder, files + pictures, len(collected.runs), rows)
