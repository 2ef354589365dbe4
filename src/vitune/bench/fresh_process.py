"""Each measurement in a fresh Python process: ``python -m vitune.bench.fresh_process JOB_JSON`` prints one
JSON line.

A fresh process per variant and round means peak memory counts that variant alone, and no variant inherits
another's allocator state or warmed caches. On the CPU, glibc's allocator is set per kind of process:

- memory: every allocation above 64 KiB served by mmap (``MALLOC_MMAP_THRESHOLD_=65536``): freed activations go
  back to the system at once, so peak RSS is the real high-water mark and repeats within about 1% (with the
  default allocator it varied by 20% between runs). That slows allocation, so time is measured elsewhere.
- timing: nothing ever given back (``MALLOC_MMAP_MAX_=0``, no trimming): after the warm-up, every step and
  every eval batch reuses the same heap, as CUDA's caching allocator does. With glibc's defaults, large
  activations are mmap'd or trimmed and faulted in again, as often as the process's history decides: of two
  identical models in one process, one took 50,000 page faults per eval batch and the other none, a 5%
  difference in time (system time) that was no property of either model.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

from ..errors import VituneError

PEAK_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
STEADY_HEAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**62)}


def restart_on_a_steady_heap() -> None:
    """Re-execute this script with :data:`STEADY_HEAP_ENV` unless it already runs with it (the allocator reads
    it at start-up only): for scripts that time models in their own process."""
    if any(os.environ.get(key) != value for key, value in STEADY_HEAP_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_HEAP_ENV})


def run_fresh(settings: dict[str, Any], variant: str, *, memory: bool, inference: bool = False,
              storage: bool = False, flops: bool = False) -> dict[str, Any]:
    """Run one measurement of `variant` in a new process and return its JSON result.

    memory: the peak-memory process (a single timed step; the CPU allocator set as above); else the timing
    process, which also measures inference (`inference`), the stored bytes (`storage`) and the step's FLOPs
    (`flops`) when asked.
    """
    job = {"settings": settings, "variant": variant, "memory": memory, "inference": inference, "storage": storage,
           "flops": flops}
    env = dict(os.environ)
    if settings.get("device", "cpu") == "cpu":
        env.update(PEAK_RSS_ENV if memory else STEADY_HEAP_ENV)
    done = subprocess.run([sys.executable, "-m", "vitune.bench.fresh_process", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise VituneError(f"bench: measuring {variant} failed:\n{done.stderr.strip()[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """The measurement `job` asks for, in this process."""
    import torch

    from ..train.build import input_size
    from .inference import measure_inference
    from .step import BenchSettings, build_backbone, count_step_flops, measure_step, resident_mib
    from .variants import adapt, checkpoint_bytes, parse_variant

    settings = BenchSettings(**job["settings"])
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    if settings.import_peft:
        import peft  # noqa: F401  (its RSS counts in every variant, not only in PEFT's)
    if job["memory"]:
        settings.steps = 1  # peak memory is reached in every step; one after the warm-up is enough
    variant = parse_variant(job["variant"])
    # What the process holds before any tensor: the libraries (the same in every process). Peak RSS above it is
    # what the variant's tensors took, the CPU's counterpart of CUDA's allocated peak (which counts tensors only).
    libraries_mib = resident_mib() if settings.device == "cpu" else 0.0
    backbone = build_backbone(settings)
    size = input_size(backbone)  # read from the plain backbone: vitune's place map knows its input size
    plain = copy.deepcopy(backbone) if job["inference"] else None
    full_bytes = checkpoint_bytes(backbone) if job["storage"] else None
    adapted = adapt(variant, backbone)
    result: dict[str, Any] = measure_step(adapted, settings, size)
    result["tensor_mib"] = result["peak_mib"] - libraries_mib
    flops = job.get("flops", False)
    if flops:  # after the timed steps and the peak: counting runs the step once more, slowly
        result["step_flops"] = count_step_flops(adapted, settings, size)
    if job["inference"] and plain is not None:
        result.update(measure_inference(plain, adapted, settings, size, flops=flops))
    if job["storage"]:
        result["full_checkpoint_bytes"] = full_bytes
        result["adapter_bytes"] = adapted.save(adapted.model) if adapted.save is not None else None
    return result


def main() -> None:
    print(json.dumps(measure(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
