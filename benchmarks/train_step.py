"""One training step of each method against full fine-tuning: time and peak memory, side by side.

Each method runs in two processes of its own: one times the step with the default allocator, one measures peak
memory. On the CPU the peak is the process's peak RSS with glibc told to serve every allocation above 64 KiB by
mmap (MALLOC_MMAP_THRESHOLD_=65536), so freed activations go back to the system at once and the peak is the
real high-water mark, the same from run to run (with the default allocator it varied by 20% between runs);
that setting slows allocation, which is why time is measured in the other process. With --device cuda the peak
is torch.cuda.max_memory_allocated.

    python benchmarks/train_step.py                       # ViT-B/16, batch 8, 224 px, CPU
    python benchmarks/train_step.py --methods full lora repadapter --batch 32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_METHODS = ["full", "linear", "lora", "repadapter", "arc", "consolidator", "kadaptation", "adaptformer",
                   "ssf", "vpt_deep"]


def measure(args) -> dict:
    import timm
    import torch
    import torch.nn.functional as F

    import vitune

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = timm.create_model(args.model, pretrained=False, num_classes=100)
    model = vitune.apply(model, args.method).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    y = torch.randint(0, 100, (args.batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    counts = vitune.count_parameters(model)
    return {"method": args.method, "step_s": statistics.median(times), "peak_mib": peak,
            "trainable": counts["trainable"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--methods", nargs="*", default=DEFAULT_METHODS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--method", help=argparse.SUPPRESS)  # set in the per-method child process
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args)))
        return

    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--method", method] + [
            f"--{k}={getattr(args, k)}" for k in ("model", "batch", "img", "device", "steps", "warmup")
        ]
        timed = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        if args.device == "cpu":
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            timed["peak_mib"] = json.loads(out.splitlines()[-1])["peak_mib"]
        rows.append(timed)
        print(f"measured {method}", file=sys.stderr)
    full = next((r for r in rows if r["method"] == "full"), rows[0])
    print(f"{args.model}, batch {args.batch}, {args.img} px, {args.device}; one AdamW step, median of {args.steps}")
    print(f"{'method':14s} {'trainable':>12s} {'step s':>8s} {'x full':>7s} {'peak MiB':>9s} {'x full':>7s}")
    for r in rows:
        print(f"{r['method']:14s} {r['trainable']:12,d} {r['step_s']:8.3f} {r['step_s'] / full['step_s']:7.2f} "
              f"{r['peak_mib']:9.0f} {r['peak_mib'] / full['peak_mib']:7.2f}")


if __name__ == "__main__":
    main()
