"""One PNG per variant: its ratios as bars, whiskers from the lowest to the highest round.

matplotlib is imported only here and only when plots are asked for; it is not a dependency of vitune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import VituneError

# (document key, bar label) in the order the bars are drawn.
BARS = (("step_vs_full", "step\nx full"), ("step_vs_floor", "step\nx floor"), ("flops_vs_floor", "FLOPs\nx floor"),
        ("memory_vs_full", "memory\nx full"),
        ("memory_vs_floor", "memory\nx floor"), ("step_vs_own", "step\nx own"), ("memory_vs_own", "memory\nx own"),
        ("unmerged_vs_plain", "unmerged\n/plain img/s"), ("merged_vs_plain", "merged\n/plain img/s"))


def write_plots(document: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write ``<folder>/<variant>.png`` for every measured variant; returns the paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise VituneError("bench: plots need matplotlib (pip install matplotlib)") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = document["settings"]
    paths = []
    for variant in document["variants"]:
        bars = [(label, variant[key]) for key, label in BARS if variant.get(key)]
        if not bars:
            continue
        fig, ax = plt.subplots(figsize=(1.1 * len(bars) + 2, 3.6))
        medians = [b["median"] for _, b in bars]
        whiskers = [[b["median"] - b["min"] for _, b in bars], [b["max"] - b["median"] for _, b in bars]]
        ax.bar(range(len(bars)), medians, yerr=whiskers, capsize=4, color="tab:blue")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
        for i, (m, (_, b)) in enumerate(zip(medians, bars)):  # above the whisker, so the two do not overlap
            ax.text(i, b["max"] + 0.02, f"{m:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("ratio (median of rounds)")
        ax.set_title(f"{variant['name']}: {s['model']}, batch {s['batch_size']}, {s['device']}", fontsize=9)
        fig.tight_layout()
        path = folder / f"{variant['name'].replace('+', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
