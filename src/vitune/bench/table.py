"""The bench document as a Markdown table: one row per variant, ratios as median (lowest-highest round)."""

from __future__ import annotations

from typing import Any

from .ratios import format_spread


def _bytes_cell(variant: dict[str, Any]) -> str:
    ratio = variant.get("storage_vs_full_checkpoint")
    if ratio is None:
        return "-"
    return f"{ratio:.4f}x ({variant['adapter_bytes']:,} B)"


def _tensor_cell(variant: dict[str, Any]) -> str:
    return "-" if variant.get("tensor_mib") is None else f"{variant['tensor_mib']:,.0f}"


def _flops_cell(variant: dict[str, Any]) -> str:
    spread = variant.get("flops_vs_floor")
    return _ratio_cell(None if spread is None else spread["median"])


def _ratio_cell(ratio: float | None) -> str:
    """A FLOPs ratio, to three decimals: it is exact (one count), and a method's arithmetic is often within 1%
    of the floor's."""
    return "-" if ratio is None else f"{ratio:.3f}x"


def _merge_cell(variant: dict[str, Any]) -> str:
    return "-" if variant.get("merge_s") is None else f"{variant['merge_s']:.3f}"


COLUMNS = ("variant", "trainable", "step s", "step x full", "step x floor", "FLOPs x floor", "memory MiB",
           "memory x full", "memory x floor", "tensors MiB", "tensors x full", "tensors x floor",
           "unmerged/plain img/s", "merged/plain img/s", "merged/plain FLOPs", "merge s", "stored x full checkpoint")


def format_table(document: dict[str, Any]) -> str:
    """A heading line (model, batch, size, device, rounds, load) and the Markdown table."""
    s = document["settings"]
    m = document["machine"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_start"])
    size = s["img_size"] or "model's"
    lines = [
        f"{s['model']}, batch {s['batch_size']}, {size} px, {s['device']}, {s.get('clock', 'wall')} clock"
        f"{', %s threads' % s['threads'] if s.get('threads') else ''}; one AdamW step; "
        f"{s['rounds']} rounds x (1 process timing {s['warmup']}+{s['steps']} steps, 1 process for peak memory); "
        f"{m['cpu_count']} CPUs, load average at start {load}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 1),
    ]
    for v in document["variants"]:
        if "step_s" not in v:
            failed = f"failed: {v.get('error', '').splitlines()[-1][:80]}"
            lines.append("| " + " | ".join([v["name"], failed] + [""] * (len(COLUMNS) - 2)) + " |")
            continue
        name = v["name"]
        if v.get("checkpointing"):
            name += " [" + ", ".join(f"own {what} {format_spread(v.get(f'{what}_vs_own'))}"
                                     for what in ("step", "memory", "tensors", "flops")) + "]"
        cells = [name, f"{v['trainable']:,}", f"{v['step_s']:.3f}", format_spread(v.get("step_vs_full")),
                 format_spread(v.get("step_vs_floor")), _flops_cell(v), f"{v['peak_mib']:,.0f}",
                 format_spread(v.get("memory_vs_full")), format_spread(v.get("memory_vs_floor")), _tensor_cell(v),
                 format_spread(v.get("tensors_vs_full")), format_spread(v.get("tensors_vs_floor")),
                 format_spread(v.get("unmerged_vs_plain")), format_spread(v.get("merged_vs_plain")),
                 _ratio_cell(v.get("merged_flops_vs_plain")), _merge_cell(v), _bytes_cell(v)]
        lines.append("| " + " | ".join(cells) + " |")
    for pair in document.get("pairs", []):
        ratios = ", ".join(f"{label} {format_spread(pair.get(f'{key}_vs_peer'))}" for key, label in
                           (("step", "step"), ("memory", "peak memory"), ("tensors", "tensors"), ("flops", "FLOPs")))
        lines.append(f"\n{pair['variant']} / {pair['peer']}, paired round by round: {ratios}")
    for name, reason in document.get("skipped", {}).items():
        lines.append(f"\nskipped {name}: {reason}")
    return "\n".join(lines)
