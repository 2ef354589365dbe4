"""benchmarks/step_flops.py and benchmarks/merged_inference.py run and print what docs/benchmarks.md quotes from
them (on ViT-Ti/16 at batch 1: the real runs take ViT-S/16 and ViT-B/16). Each script's main() runs in this
process, so the tests pay no interpreter start-up."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_script(monkeypatch, capsys):
    threads = torch.get_num_threads()  # the scripts set their own; the rest of the suite keeps its count

    def run(name: str, *args: str) -> list[str]:
        script = runpy.run_path(str(REPO / "benchmarks" / name), run_name="benchmark")
        # merged_inference.py re-executes itself with the bench's allocator setting: not inside pytest.
        script["main"].__globals__["restart_on_a_steady_heap"] = lambda: None
        monkeypatch.setattr(sys, "argv", [name, *args])
        script["main"]()
        return capsys.readouterr().out.splitlines()

    yield run
    torch.set_num_threads(threads)


def test_step_flops_prints_each_variant_against_the_floor_and_full(run_script):
    lines = run_script("step_flops.py", "--model", "vit_tiny_patch16_224", "--variants", "lora,arc")
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in lines[2:]}
    assert list(rows) == ["full", "floor", "lora", "arc"]
    assert rows["floor"][1] == 1.0 and rows["full"][2] == 1.0
    assert rows["full"][1] > 1.3  # weight gradients: every product of the backward twice
    assert rows["lora"][1] < rows["arc"][1]  # ARC's rank-50 projections against LoRA's rank 8 on q and v


def test_merged_inference_prints_time_and_flops_ratios(run_script):
    lines = run_script("merged_inference.py", "--model", "vit_tiny_patch16_224", "--batch-size", "1", "--repeats", "4",
                       "--threads", "1", "--methods", "repadapter,adaptformer")
    assert lines[-1].split() == ["adaptformer", "does", "not", "merge"]
    cells = lines[-2].split()
    assert cells[0] == "repadapter" and float(cells[3].rstrip("x")) > 0
    assert cells[-1] == "1.000x"  # the merged model's forward FLOPs are the plain model's


def test_merged_inference_counts_flops_alone_with_no_repeats(run_script):
    lines = run_script("merged_inference.py", "--model", "vit_tiny_patch16_224", "--batch-size", "1", "--repeats", "0",
                       "--methods", "ssf")
    assert lines[-1].split() == ["ssf", "-", "-", "-", "1.000x"]
