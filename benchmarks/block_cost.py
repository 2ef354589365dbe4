"""The training cost of one transformer block per method, against the same block frozen (its backprop floor).

Each variant (a method, or a peer: the names of ``vitune bench``) is applied to a one-block copy of the model;
the block's forward and backward (gradients to its input and to what trains, no optimizer) are timed as process CPU time on one thread, the variants
interleaved rep by rep, and the best rep kept: a neighbour's load on a shared machine lengthens reps, it does
not shorten them. A block's cost isolates what a method adds where ``vitune bench`` times whole steps, whose
ratios on a busy 2-core machine move by several percent from round to round.

    python benchmarks/block_cost.py                                   # ViT-S/16, batch 16, every method
    python benchmarks/block_cost.py --model vit_base_patch16_224 --batch-size 8 --variants lora,ssf --reps 30

It runs against whatever vitune is importable, so ``PYTHONPATH=OLD/src`` times an older checkout the same way.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

import vitune
from vitune.bench.fresh_process import restart_on_a_steady_heap
from vitune.bench.variants import adapt, parse_variant

DEFAULT_VARIANTS = ("lora", "lora_qkv", "peft_lora_qkv", "repadapter", "repadapter_official", "arc", "kadaptation",
                    "consolidator", "ssf", "adaptformer")


def one_block(name: str, variant: str) -> torch.nn.Module:
    """The model's first block, from the model cut to one block and adapted for `variant` as ``vitune bench``
    adapts it (``floor``: frozen; ``full``: all of it trains; a method, lora_qkv, or a peer)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, depth=1, num_classes=10)
    if variant == "full":
        return model.train().blocks[0]
    adapted = adapt(parse_variant(variant), model).model.train()
    if hasattr(adapted, "get_base_model"):  # PEFT's wrapper
        adapted = adapted.get_base_model()
    return adapted.blocks[0]


def block_seconds(block: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> float:
    start = time.process_time()
    block(x).backward(upstream)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="vitune bench's variant names (methods, lora_qkv, peft_lora_qkv, repadapter_official)")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    restart_on_a_steady_heap()  # the timing processes' allocator (vitune.bench.fresh_process)
    torch.set_num_threads(1)
    variants = ["floor", "full", *args.variants.split(",")]
    blocks = {v: one_block(args.model, v) for v in variants}
    model = timm.create_model(args.model, pretrained=False, depth=1)
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, tokens, model.embed_dim, generator=g).requires_grad_(True)
    upstream = torch.randn(args.batch_size, tokens, model.embed_dim, generator=g)
    best = {v: float("inf") for v in variants}
    for rep in range(args.reps + 1):  # the first rep warms up
        for variant, block in blocks.items():
            seconds = block_seconds(block, x, upstream)
            x.grad = None
            block.zero_grad(set_to_none=True)
            if rep:
                best[variant] = min(best[variant], seconds)
    print(f"{args.model}, batch {args.batch_size}, {tokens} tokens, one block, 1 thread, best of {args.reps} "
          f"(vitune {vitune.__version__}, torch {torch.__version__})")
    print(f"{'variant':20s} {'ms':>8s} {'x floor':>8s}")
    for variant in variants:
        print(f"{variant:20s} {best[variant] * 1e3:8.1f} {best[variant] / best['floor']:8.3f}")


if __name__ == "__main__":
    main()
