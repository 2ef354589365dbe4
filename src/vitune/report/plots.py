"""The report's PNG plots; matplotlib is imported only here, when a report is written (Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .tables import Row, task_columns


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_parameters(rows: Sequence[Row], path: Path) -> Path:
    """Each row's headline average against its method's trainable parameters (head excluded), log x."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        headline = row.headline
        if headline is None or row.method_params is None:
            continue
        x = max(row.method_params, 1)
        ax.errorbar([x], [headline.stat.mean], yerr=[headline.stat.std or 0], fmt="o", capsize=3)
        ax.annotate(row.label, (x, headline.stat.mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("method parameters (head excluded)")
    labels = sorted({row.headline.label for row in rows if row.headline is not None})
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(" / ".join(labels), fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def per_task_bars(rows: Sequence[Row], path: Path) -> Path:
    """Grouped bars: each task's mean accuracy per row, with the standard deviation over seeds."""
    plt = _pyplot()
    tasks = task_columns(rows)
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tasks) * max(1, len(rows)) ** 0.5 + 2), 4))
    for i, row in enumerate(rows):
        xs = [t + i * width for t in range(len(tasks))]
        means = [row.tasks[t].mean if t in row.tasks else 0.0 for t in tasks]
        errors = [(row.tasks[t].std or 0.0) if t in row.tasks else 0.0 for t in tasks]
        ax.bar(xs, means, width, yerr=errors, capsize=2, label=row.label)
    ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
