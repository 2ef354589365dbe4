"""DDP under torchrun: two CPU processes (gloo) at batch 4 train the same adapter as one process at batch 8."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import yaml

from test_train_support import adapter_tensors, results, run_cli, subprocess_env, train_args, vtab_task  # noqa: F401


def test_two_processes_match_one_with_the_same_global_batch(vtab_task, tmp_path):
    # FGVC-style random crops would draw per item and be the same in both runs too; the VTAB recipe keeps it simple.
    # LoRA's dropout is 0 by default: with dropout, each process draws its own masks.
    settings = ("--epochs", "3", "--warmup-epochs", "1", "--eval-interval", "1")
    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vitune", *map(str, train_args(vtab_task, two, *settings, "--batch-size", "4"))]
    # Its own process group, so a hang ends with the launcher and both workers killed.
    launcher = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        out, err = launcher.communicate(timeout=240)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, err[-3000:]
    assert out.count("accuracy") == 1  # only rank 0 reports
    one = tmp_path / "one"
    assert run_cli(train_args(vtab_task, one, *settings, "--batch-size", "8"))[0] == 0

    a, b = adapter_tensors(two), adapter_tensors(one)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    r2, r1 = results(two), results(one)
    assert (r2["world_size"], r2["global_batch_size"], r1["global_batch_size"]) == (2, 8, 8)
    assert r2["accuracy"] == r1["accuracy"]
    assert yaml.safe_load((two / "config.yaml").read_text())["resolved"]["distributed"]["world_size"] == 2
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # rank 0 wrote it all
