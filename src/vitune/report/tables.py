"""The report's numbers: per setting (a method in one run root) and task, the mean and standard deviation
over seeds; VTAB-1k group means, the mean of group means and the plain mean over tasks, each labelled.

Standard deviations are the sample standard deviation over seeds (n - 1), absent for a single seed. An
average's deviation is taken over the per-seed averages, when every task of the row has the same seeds.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .collect import RunRecord
from .groups import GROUP_SIZES, GROUPS, VTAB_TASK_COUNT, group_of, task_order

# The protocol columns every row reports, each read from results.json.
PROTOCOL_KEYS = ("train_split", "eval_split", "selection", "search", "normalize", "backbone", "epochs", "recipe")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None
    n: int
    seeds: tuple[int, ...] = ()

    @staticmethod
    def of(values: Sequence[float], seeds: Sequence[int] = ()) -> "Stat":
        std = statistics.stdev(values) if len(values) > 1 else None
        return Stat(statistics.fmean(values), std, len(values), tuple(seeds))


@dataclass(frozen=True)
class Average:
    label: str  # says which convention: "Natural mean", "mean of group means", "plain mean of tasks"
    kind: str  # group, groups_mean, tasks_mean
    stat: Stat


@dataclass
class Row:
    """One setting: a method's runs under one root."""

    label: str
    method: str
    root: str
    runs: list[RunRecord]
    tasks: dict[str, Stat] = field(default_factory=dict)
    averages: list[Average] = field(default_factory=list)
    protocol: dict[str, list[str]] = field(default_factory=dict)
    method_params: int | None = None
    trainable_params: float | None = None
    adapter_bytes: float | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def headline(self) -> Average | None:
        """The mean of group means when the row covers all three VTAB-1k groups, else the plain mean."""
        for kind in ("groups_mean", "tasks_mean"):
            for average in self.averages:
                if average.kind == kind:
                    return average
        return None


def protocol_value(run: RunRecord, key: str) -> str:
    if key == "backbone":
        return run.backbone
    if key == "search":  # how the run's hyper-parameters were chosen
        chosen = run.chosen
        return f"{chosen['strategy']} on {chosen['val_split']}" if chosen else "none"
    return str(run.results.get(key))


def build_rows(runs: Sequence[RunRecord]) -> list[Row]:
    grouped: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        grouped.setdefault((str(run.root), run.results["method"]), []).append(run)
    per_method = Counter(method for _, method in grouped)
    rows = []
    for (root, method), members in grouped.items():
        label = method if per_method[method] == 1 else f"{method} ({members[0].root.name})"
        rows.append(_row(label, method, root, members))
    _flag(rows)
    return rows


def _row(label: str, method: str, root: str, runs: list[RunRecord]) -> Row:
    row = Row(label, method, root, runs)
    by_task: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    for task in sorted(by_task, key=task_order):
        members = sorted(by_task[task], key=lambda r: r.seed)
        row.tasks[task] = Stat.of([r.results["accuracy"] for r in members], [r.seed for r in members])
    row.averages = _averages(row.tasks, by_task)
    row.protocol = {key: sorted({protocol_value(r, key) for r in runs}) for key in PROTOCOL_KEYS}
    counts = [r.results.get("counts") or {} for r in runs]
    methods = sorted({c.get("method") for c in counts if c.get("method") is not None})
    row.method_params = methods[0] if len(methods) == 1 else None
    trainable = [c["trainable"] for c in counts if c.get("trainable") is not None]
    row.trainable_params = statistics.fmean(trainable) if trainable else None
    sizes = [r.results["adapter_bytes"] for r in runs if r.results.get("adapter_bytes") is not None]
    row.adapter_bytes = statistics.fmean(sizes) if sizes else None
    if len(methods) > 1:
        row.flags.append(f"method parameters differ between runs ({', '.join(map(str, methods))})")
    return row


def _averages(tasks: dict[str, Stat], by_task: dict[str, list[RunRecord]]) -> list[Average]:
    # Per-seed averages need every task to have the same seeds, each once.
    seed_sets = {stat.seeds for stat in tasks.values()}
    only = next(iter(seed_sets))
    common = only if len(seed_sets) == 1 and len(only) == len(set(only)) else None

    def per_seed(average: Callable[[dict[str, float]], float | None]) -> Stat:
        """The average of the task means, with its deviation over the per-seed averages when seeds align."""
        mean = average({t: s.mean for t, s in tasks.items()})
        if common is None or len(common) < 2:
            return Stat(mean, None, 1 if common is None else len(common), common or ())
        values = []
        for seed in common:
            accuracy = {t: next(r.results["accuracy"] for r in runs if r.seed == seed) for t, runs in by_task.items()}
            values.append(average(accuracy))
        return Stat(mean, statistics.stdev(values), len(values), common)

    averages: list[Average] = []
    present = {g: [t for t in tasks if group_of(t) == g] for g in GROUPS}
    for group in GROUPS:
        members = present[group]
        if members:
            averages.append(Average(f"{group} mean", "group", per_seed(
                lambda acc, m=members: statistics.fmean(acc[t] for t in m))))
    groups_present = [g for g in GROUPS if present[g]]
    if len(groups_present) == len(GROUPS):
        def groups_mean(acc: dict[str, float]) -> float:
            return statistics.fmean(statistics.fmean(acc[t] for t in present[g]) for g in GROUPS)

        averages.append(Average("mean of group means", "groups_mean", per_seed(groups_mean)))
    averages.append(Average("plain mean of tasks", "tasks_mean", per_seed(lambda acc: statistics.fmean(acc.values()))))
    return averages


def _flag(rows: list[Row]) -> None:
    """Mark what makes a row not comparable with the others: the majority protocol is the reference."""
    all_runs = [r for row in rows for r in row.runs]
    reference = {key: Counter(protocol_value(r, key) for r in all_runs).most_common(1)[0][0]
                 for key in ("backbone", "train_split", "normalize")}
    for row in rows:
        if any(r.results.get("selection") == "best_eval" for r in row.runs):
            row.flags.append("selection on the reported split (best_eval): optimistic, not comparable")
        if any(not r.results.get("weights_sha256") and not r.results.get("pretrained") for r in row.runs):
            row.flags.append("random-init backbone")
        for key, what in (("backbone", "different backbone weights"), ("train_split", "different training split"),
                          ("normalize", "different normalisation")):
            values = row.protocol[key]
            if values != [reference[key]]:
                row.flags.append(f"{what}: {', '.join(values)} (most runs: {reference[key]})")
        mixed = [key for key in PROTOCOL_KEYS if len(row.protocol[key]) > 1 and key != "recipe"]
        if mixed:
            row.flags.append(f"runs of this row differ in {', '.join(mixed)}")


def coverage(row: Row) -> str:
    """How many tasks the row's averages cover: ``19 (Natural 7/7, Specialized 4/4, Structured 8/8)``."""
    groups = [f"{g} {sum(group_of(t) == g for t in row.tasks)}/{GROUP_SIZES[g]}" for g in GROUPS
              if any(group_of(t) == g for t in row.tasks)]
    complete = len(row.tasks) == VTAB_TASK_COUNT and all(group_of(t) for t in row.tasks)
    return f"{len(row.tasks)}" + (f" ({', '.join(groups)})" if groups else "") + (" = all of VTAB-1k" if complete else "")


def task_columns(rows: Sequence[Row]) -> list[str]:
    return sorted({t for row in rows for t in row.tasks}, key=task_order)


def fmt(stat: Stat | None, digits: int = 2) -> str:
    if stat is None:
        return ""
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {stat.std:.{digits}f}" if stat.std is not None else "")


def as_dict(row: Row) -> dict[str, Any]:
    return {"label": row.label, "method": row.method, "root": row.root,
            "tasks": {t: vars(s) for t, s in row.tasks.items()},
            "averages": [{"label": a.label, "kind": a.kind, **vars(a.stat)} for a in row.averages],
            "protocol": row.protocol, "flags": row.flags,
            "searched": [{"task": r.task, "seed": r.seed, "test_accuracy": r.results["accuracy"], **r.chosen}
                         for r in sorted(row.runs, key=lambda r: (r.task, r.seed)) if r.chosen]}
