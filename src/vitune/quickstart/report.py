"""The quickstart job's table (console and Markdown), its JSON record and its plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_write, atomic_write_json, atomic_write_text

COLUMNS = ("method", "accuracy", "trainable parameters", "adapter file", "training time",
           "img/s merged / plain", "merge check (max logit diff)")
RIGHT = {"accuracy", "trainable parameters", "adapter file", "training time", "img/s merged / plain"}
FILES = {"markdown": "results.md", "json": "results.json", "plot": "accuracy_vs_parameters.png"}


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1000:,.1f} kB" if n < 1_000_000 else f"{n / 1e6:,.2f} MB"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {s % 60:02.0f} s"


def cells(row: dict[str, Any]) -> list[str]:
    speeds, check = row["throughput"], row["merge"]
    if check is not None:
        speed = f"{speeds['merged']:,.0f} / {speeds['plain']:,.0f}"
        merge = f"{'OK' if check['ok'] else 'FAILED'} ({check['max_abs_logit_diff']:.0e})"
    else:
        speed = f"unmerged {speeds['unmerged']:,.0f} / {speeds['plain']:,.0f}"
        merge = "not mergeable"
    return [row["method"], f"{row['accuracy']:.1f}%", f"{row['trainable']:,}", _size(row["adapter_bytes"]),
            _seconds(row["train_seconds"]), speed, merge]


def text_table(rows: list[dict[str, Any]]) -> str:
    body = [cells(r) for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(COLUMNS)]

    def line(values):
        return "  ".join(v.rjust(w) if c in RIGHT else v.ljust(w) for v, w, c in zip(values, widths, COLUMNS)).rstrip()

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(b) for b in body)])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---:" if c in RIGHT else "---" for c in COLUMNS) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(cells(r)) + " |" for r in rows)])


def describe(summary: dict[str, Any]) -> str:
    """One sentence: what was trained on what, and how long the job took."""
    s, d = summary["settings"], summary["data"]
    return (f"{summary['backbone']['name']} backbone, {d['train_images']:,} training / {d['test_images']:,} test "
            f"images of Fashion-MNIST at {s['img_size']} px, {s['epochs']} epochs, batch {s['batch_size']}, AdamW "
            f"lr {s['lr']:g} (linear probe {s['linear_lr']:g}) with a cosine decay; {summary['device']} with "
            f"{summary['threads']} threads; whole job "
            f"{_seconds(summary['wall_seconds'])}.")


def verdict(summary: dict[str, Any]) -> list[str]:
    targets = summary["targets"]
    return [
        f"{method}: {gain:+.1f} points over the linear probe"
        + ("" if gain >= targets["margin_points"] else f" (below the {targets['margin_points']:g}-point target)")
        for method, gain in targets["gains"].items()
    ]


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], with_plot: bool = True) -> str:
    lines = ["# vitune quickstart", "", describe(summary), "", markdown_table(rows), ""]
    lines += [f"- {v}" for v in verdict(summary)]
    lines += ["- img/s: inference throughput of the merged model and of the plain backbone, same batch "
              f"({summary['settings']['throughput_batch']}), best of 3 alternating rounds.",
              f"- merge check: the largest difference between the logits before and after merging the adapter "
              f"into the weights, on {summary['settings']['check_images']} test images.", ""]
    if with_plot:
        lines += [f"![accuracy against trainable parameters]({FILES['plot']})", ""]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> bool:
    """Accuracy against trainable parameters (log scale), one labelled point per method; False without
    matplotlib. Drawn on a figure of its own (no pyplot), so no global backend is touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [r["trainable"] for r in rows]
    ys = [r["accuracy"] for r in rows]
    ax.scatter(xs, ys, s=36, color="tab:blue", zorder=3)
    for r in rows:
        ax.annotate(r["method"], (r["trainable"], r["accuracy"]), textcoords="offset points", xytext=(6, 4))
    linear = next((r for r in rows if r["method"] == "linear"), None)
    if linear is not None:
        ax.axhline(linear["accuracy"], color="grey", linestyle="--", linewidth=0.8, label="linear probe")
        ax.legend(loc="lower right", frameon=False)
    ax.set_xscale("log")
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 2, hi * 3)
    pad = max(1.0, (max(ys) - min(ys)) * 0.2)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"test accuracy, % ({summary['data']['test_images']:,} images)")
    s = summary["settings"]
    ax.set_title(f"{summary['backbone']['name']} on Fashion-MNIST, {s['epochs']} epochs at {s['img_size']} px",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return True


def write_outputs(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.md, results.json and the plot in `out`; returns the paths written."""
    written = {}
    if plot(rows, summary, out / FILES["plot"]):
        written["plot"] = out / FILES["plot"]
    written["markdown"] = atomic_write_text(out / FILES["markdown"], markdown(rows, summary, "plot" in written))
    written["json"] = atomic_write_json(out / FILES["json"], {"summary": summary, "rows": rows})
    return written
