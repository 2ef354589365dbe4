"""The arithmetic of one training step per variant, against the backprop floor's and full fine-tuning's.

``vitune bench`` reports the same count (its "FLOPs x floor" column) beside the measured step time; this script
gives the count alone, in seconds rather than an hour: a step's FLOPs do not depend on the machine, and every
product in a ViT grows with the batch, so the ratios at batch 1 are those at any batch. A method whose step
time over the floor's matches its FLOPs over the floor's computes nothing it could skip; the rest of its time
is elementwise work and overhead.

    python benchmarks/step_flops.py                                     # ViT-S/16, every method and peer
    python benchmarks/step_flops.py --model vit_base_patch16_224 --variants arc,repadapter
"""

from __future__ import annotations

import argparse

import torch

from vitune.bench.step import BenchSettings, build_backbone, count_step_flops
from vitune.bench.variants import adapt, expand_methods, parse_variant
from vitune.train.build import input_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--variants", default="all",
                        help="vitune bench --methods names, sets such as all included (full and floor always)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = BenchSettings(model=args.model, batch_size=args.batch_size)
    names = list(dict.fromkeys(["full", "floor", *expand_methods(args.variants.split(","))]))
    size = input_size(build_backbone(settings))  # read from the plain backbone, as vitune bench does
    flops = {}
    for name in names:
        flops[name] = count_step_flops(adapt(parse_variant(name), build_backbone(settings)), settings, size)
    print(f"{args.model}, batch {args.batch_size}: FLOPs of one step's forward and backward (torch FlopCounterMode)")
    print(f"{'variant':22s} {'GFLOP':>9s} {'x floor':>8s} {'x full':>7s}")
    for name in names:
        print(f"{name:22s} {flops[name] / 1e9:9.3f} {flops[name] / flops['floor']:8.3f} {flops[name] / flops['full']:7.3f}")


if __name__ == "__main__":
    main()
