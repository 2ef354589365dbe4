"""The zero-argument job: a tiny end-to-end run that proves the whole adapter life cycle offline.

apply -> train a few steps on generated images -> save -> load into a fresh backbone -> merge -> compare.
It needs no download: the backbone is a small randomly initialised timm ViT, the data are generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import api, io

NUM_CLASSES = 4
IMG = 32


def tiny_backbone(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=IMG, patch_size=8, depth=4, embed_dim=64,
        num_heads=4, num_classes=NUM_CLASSES,
    )


# One colour per class: red, green, blue, yellow speckles on noise.
CLASS_COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def speckle_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images where 30% of the pixels carry the class colour; the colour is the label."""
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    noise = torch.randn(n, 3, IMG, IMG, generator=generator) * 0.8
    speckles = (torch.rand(n, 1, IMG, IMG, generator=generator) < 0.3).float()
    return noise + speckles * CLASS_COLOURS[labels][:, :, None, None], labels


@dataclass
class DemoResult:
    counts: dict
    accuracy_before: float
    accuracy_after: float
    reload_max_diff: float
    merge_max_diff: float | None
    stock_max_diff: float | None
    folder: Path


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def run(method: str = "lora", steps: int = 100, out: str | Path = "runs/demo", seed: int = 0,
        progress: bool = True, **config) -> DemoResult:
    gen = torch.Generator().manual_seed(seed)
    x_test, y_test = speckle_images(256, gen)

    model = api.apply(tiny_backbone(seed), method, **config)
    counts = api.count_parameters(model)
    acc_before = _accuracy(model, x_test, y_test)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    bar = tqdm(range(steps), desc=f"training {method}", disable=None if progress else True)  # None: off when not a terminal
    for _ in bar:
        x, y = speckle_images(32, gen)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    acc_after = _accuracy(model, x_test, y_test)

    folder = io.save_adapter(model, out)
    reloaded = io.load_adapter(tiny_backbone(seed), folder).eval()
    with torch.no_grad():
        logits = model(x_test)
        reload_diff = (reloaded(x_test) - logits).abs().max().item()

    merge_diff = stock_diff = None
    if api.is_mergeable(method):
        api.merge(reloaded)
        stock = tiny_backbone(seed)
        stock.load_state_dict(reloaded.state_dict(), strict=True)  # a plain timm model, nothing of vitune
        with torch.no_grad():
            merge_diff = (reloaded(x_test) - logits).abs().max().item()
            stock_diff = (stock.eval()(x_test) - logits).abs().max().item()
    return DemoResult(counts, acc_before, acc_after, reload_diff, merge_diff, stock_diff, folder)


def report(result: DemoResult, method: str) -> str:
    c = result.counts
    files = ", ".join(f"{p.name} ({p.stat().st_size:,} B)" for p in sorted(result.folder.iterdir()))
    # Backbone tensors a method also trains (Consolidator's biases and norms) are part of `trainable`, so they
    # are shown too: method + extra + head == trainable.
    extra = f"{c['extra']:,} extra (backbone parameters trained with it), " if c["extra"] else ""
    lines = [
        f"method {method}: {c['method']:,} method parameters, {extra}{c['head']:,} head, "
        f"{c['trainable']:,} trainable of {c['total']:,}",
        f"accuracy on 256 generated test images: {result.accuracy_before:.1%} before, "
        f"{result.accuracy_after:.1%} after training",
        f"saved to {result.folder}: {files}",
        f"reloaded into a fresh backbone: max |logit difference| = {result.reload_max_diff:.2e}",
    ]
    if result.merge_max_diff is None:
        lines.append(f"{method} is not mergeable: its inference keeps the adapter")
    else:
        lines.append(f"merged into the backbone: max |logit difference| = {result.merge_max_diff:.2e}")
        lines.append(f"loaded into a plain timm model (strict): max |logit difference| = {result.stock_max_diff:.2e}")
    return "\n".join(lines)


def passed(result: DemoResult, tolerance: float = 1e-4) -> bool:
    diffs = [result.reload_max_diff, result.merge_max_diff, result.stock_max_diff]
    return all(d is None or d <= tolerance for d in diffs)
