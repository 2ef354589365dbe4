"""Merged against plain inference throughput, per mergeable method, with enough batches to read 1%.

``vitune bench`` times three eval batches per model per process, beside the training step; on a shared CPU
that puts a 1-2% spread on its merged/plain ratio. Here each method's plain backbone, adapted model and merged
model run ``--repeats`` batches each in turn, in one process (the bench's own inference measurement), and the
ratio printed is the median of the per-turn ratios with their first and third quartiles. A merged model
has the plain model's modules and shapes, so its ratio should be 1 up to noise.

    python benchmarks/merged_inference.py                                   # ViT-S/16, batch 16, 20 turns
    python benchmarks/merged_inference.py --model vit_base_patch16_224 --batch-size 8 --methods lora,repadapter
    python benchmarks/merged_inference.py --repeats 0 --batch-size 1                # the FLOPs alone
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

import vitune
from vitune.bench.fresh_process import restart_on_a_steady_heap
from vitune.bench.inference import eval_models, forward_flops, inference_seconds_of
from vitune.bench.step import BenchSettings, build_backbone
from vitune.bench.variants import adapt, parse_variant
from vitune.train.build import input_size

DEFAULT_METHODS = ("lora", "repadapter", "arc", "consolidator", "kadaptation", "ssf", "bitfit", "linear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--repeats", type=int, default=20,
                        help="batches per model, in turns (0: count the FLOPs only, in seconds)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    args = parser.parse_args()
    restart_on_a_steady_heap()  # the timing processes' allocator (vitune.bench.fresh_process)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings(model=args.model, batch_size=args.batch_size, inference_repeats=args.repeats,
                             clock=args.clock, threads=args.threads)
    print(f"{args.model}, batch {args.batch_size}, {args.repeats} turns, {torch.get_num_threads()} threads, "
          f"{args.clock} clock (vitune {vitune.__version__}, torch {torch.__version__})")
    print(f"{'method':20s} {'plain img/s':>12s} {'merged img/s':>13s} {'merged/plain':>13s}  (quartiles)      "
          "FLOPs merged/plain")
    for method in args.methods.split(","):
        backbone = build_backbone(settings)
        size = input_size(backbone)
        plain = copy.deepcopy(backbone)
        adapted = adapt(parse_variant(method), backbone)
        if adapted.merge is None:
            print(f"{method:20s} does not merge")
            continue
        models, _ = eval_models(plain, adapted, settings)
        flops = forward_flops(models["merged"], settings, size) / forward_flops(models["plain"], settings, size)
        if args.repeats == 0:
            print(f"{method:20s} {'-':>12s} {'-':>13s} {'-':>13s}  {'':13s}  {flops:.3f}x", flush=True)
            continue
        seconds = inference_seconds_of(models, settings, size)
        ratios = [p / m for p, m in zip(seconds["plain"], seconds["merged"])]  # throughput: time ratio inverted
        q1, median, q3 = statistics.quantiles(ratios, n=4)
        img_s = {name: args.batch_size / statistics.median(t) for name, t in seconds.items()}
        print(f"{method:20s} {img_s['plain']:12.1f} {img_s['merged']:13.1f} {median:12.3f}x  ({q1:.3f}-{q3:.3f})  "
              f"{flops:.3f}x", flush=True)


if __name__ == "__main__":
    main()
