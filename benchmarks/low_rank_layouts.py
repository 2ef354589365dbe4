"""Why ``layers/low_rank.py`` keeps a narrow hidden as (r, tokens): the same products in both layouts.

Autograd forms a weight's gradient in the weight's layout. This times, on the CPU, each product a rank-r
branch needs in training, in the layout autograd picks for an ``nn.Linear``-style (out, r) weight and in
the transposed layout ``layers/low_rank.py`` arranges (process CPU time, best of 20, so a shared machine's
other jobs lengthen it little; ViT-S/16 qkv shapes, batch 16, by default):

    python benchmarks/low_rank_layouts.py --threads 1      # tokens 3152, in 384, out 1152, r 8
    python benchmarks/low_rank_layouts.py --threads 1 --tokens 1576 --features 768 --out 2304 --rank 8
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch


def best_ms(fn: Callable[[], torch.Tensor], repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16 * 197)
    parser.add_argument("--features", type=int, default=384, help="the branch's input width")
    parser.add_argument("--out", type=int, default=3 * 384, help="the branch's output width")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.tokens, args.features, generator=g)  # the branch's input
    grad = torch.randn(args.tokens, args.out, generator=g)  # the gradient reaching its output
    hidden = torch.randn(args.tokens, args.rank, generator=g)
    up = torch.randn(args.out, args.rank, generator=g)  # B, (out, r)
    rows = [  # (what, autograd's layout for an (out, r) / (r, in) weight, the (r, tokens) layout)
        ("gradient of B", lambda: grad.t() @ hidden, lambda: (hidden.t() @ grad).t()),
        ("gradient of the hidden", lambda: grad @ up, lambda: (up.t() @ grad.t()).t()),
        ("gradient of a (in, r) weight", lambda: x.t() @ hidden, lambda: (hidden.t() @ x).t()),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tokens {args.tokens}, "
          f"in {args.features}, out {args.out}, r {args.rank}")
    print(f"{'product':32s} {'(big, r) result':>16s} {'(r, big) result':>16s}")
    for what, usual, transposed in rows:
        print(f"{what:32s} {best_ms(usual):13.2f} ms {best_ms(transposed):13.2f} ms")


if __name__ == "__main__":
    main()
