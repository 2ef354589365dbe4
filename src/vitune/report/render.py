"""The report as Markdown (``report.md``) and CSV (``report.csv``, one line per row and task or average)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from .collect import Collected
from .groups import group_of
from .tables import PROTOCOL_KEYS, Row, coverage, fmt, task_columns

CSV_COLUMNS = ("row", "method", "root", "task", "group", "kind", "mean", "std", "n", "seeds", "method_params",
               "trainable_params", "adapter_bytes", "flags")


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}"


def markdown(rows: Sequence[Row], collected: Collected, roots: Sequence[str], plots: Sequence[Path]) -> str:
    tasks = task_columns(rows)
    average_labels = list(dict.fromkeys(a.label for row in rows for a in row.averages))
    lines = [
        "# vitune report",
        "",
        f"Runs: {len(collected.runs)} finished runs evaluated on a test split, under {', '.join(roots)}."
        + (f" Left out: {len(collected.left_out)} (search grid points scored on validation, or other splits)."
           if collected.left_out else ""),
        "",
        "Accuracy is top-1 % on the test split, mean ± sample standard deviation over seeds (no ± for one seed).",
        "VTAB-1k has two averages: the mean of the three group means (the NOAH, RepAdapter and Consolidator",
        "papers' \"Average\") and the plain mean over tasks (V-PETL Bench's \"Mean\"); both are labelled. They compare",
        "with published figures only when a row covers all 19 tasks (column \"tasks\").",
        "",
        "## Accuracy",
        "",
    ]
    header = ["row", *tasks, *average_labels, "tasks", "method params", "trainable (mean)", "adapter bytes (mean)", "flags"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        by_label = {a.label: a.stat for a in row.averages}
        cells = [row.label, *(fmt(row.tasks.get(t)) for t in tasks), *(fmt(by_label.get(label)) for label in average_labels),
                 coverage(row),
                 _number(row.method_params), _number(row.trainable_params), _number(row.adapter_bytes),
                 "; ".join(row.flags) or "comparable"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Seeds per task: " + "; ".join(
        f"{row.label}: " + ", ".join(f"{t} {list(s.seeds)}" for t, s in row.tasks.items()) for row in rows), ""]
    lines += ["## Protocol", "", "| row | " + " | ".join(PROTOCOL_KEYS) + " | runs |",
              "|" + "---|" * (len(PROTOCOL_KEYS) + 2)]
    for row in rows:
        lines.append("| " + " | ".join([row.label, *(", ".join(row.protocol[k]) for k in PROTOCOL_KEYS),
                                        str(len(row.runs))]) + " |")
    lines += ["", "A row is flagged when it is not comparable with the others: selection on the reported split,",
              "a random-init backbone, or backbone weights, training split or normalisation other than most runs'.", ""]
    searched = [(row, run) for row in rows for run in sorted(row.runs, key=lambda r: (r.task, r.seed)) if run.chosen]
    if searched:
        lines += ["## Searched hyper-parameters", "",
                  "The values each search chose on its validation split (then retrained on train+val and tested "
                  "once: the accuracy above).", "", "| row | task | seed | chosen | validation accuracy | test accuracy |",
                  "|---|---|---|---|---:|---:|"]
        for row, run in searched:
            chosen = run.chosen
            values = ", ".join(f"{k}={v}" for k, v in chosen["values"].items())
            lines.append(f"| {row.label} | {run.task} | {run.seed} | {values} | {chosen['val_accuracy']:.2f} "
                         f"({chosen['val_split']}) | {run.results['accuracy']:.2f} |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    if collected.left_out:
        lines += ["## Left out", ""] + [f"- `{path}`: {why}" for path, why in collected.left_out] + [""]
    return "\n".join(lines)


def csv_text(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        common = [row.method_params, _plain(row.trainable_params), _plain(row.adapter_bytes), "; ".join(row.flags)]
        for task, stat in row.tasks.items():
            writer.writerow([row.label, row.method, row.root, task, group_of(task) or "", "task", _plain(stat.mean),
                             _plain(stat.std), stat.n, " ".join(map(str, stat.seeds)), *common])
        for average in row.averages:
            writer.writerow([row.label, row.method, row.root, average.label, "", average.kind, _plain(average.stat.mean),
                             _plain(average.stat.std), average.stat.n, " ".join(map(str, average.stat.seeds)), *common])
    return buffer.getvalue()


def _plain(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))
