"""Shared pieces of the training tests (no tests here): the tiny backbone's flags, dataset fixtures, runners.

The backbone is timm's ViT at depth 2, width 32, 32 px images in 8 px patches: a training epoch on the tiny
datasets takes a few hundredths of a second, so the tests run the real commands end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import datasets
from vitune import cli

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "--model", "vit_tiny_patch16_224",
    "--model-kwargs", "depth=2", "embed_dim=32", "num_heads=2", "img_size=32", "patch_size=8",
]
# Fast, deterministic settings for a tiny run: no warm-up, a learning rate that learns colours in a few steps,
# data loading in the main process.
QUICK = ["--epochs", "2", "--batch-size", "8", "--warmup-epochs", "0", "--lr", "0.01", "--workers", "0"]


def train_args(data: Path, out: Path, *extra: str, method: str = "lora") -> list[str]:
    return ["train", "--method", method, *TINY_MODEL, "--data", str(data), *QUICK, *extra, "--out", str(out)]


def run_cli(args: list[str], capsys=None) -> tuple[int, str, str]:
    """`vitune ARGS` in this process; returns (exit code, stdout, stderr) when `capsys` is given."""
    code = cli.main([str(a) for a in args])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subprocess_env() -> dict[str, str]:
    """One thread per process, as in this process (conftest), so subprocess runs compute bit for bit alike."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def vitune_subprocess(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vitune", *map(str, args)], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def adapter_tensors(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def vtab_task(tmp_path_factory) -> Path:
    """A 4-class VTAB-1k task (16 images per split, 32 in train800val200)."""
    return datasets.make_vtab(tmp_path_factory.mktemp("vtab"), name="tiny", n_per_split=16, num_classes=4)
