"""Exact resume: a run killed with SIGKILL at any moment and continued with --resume ends bit for bit like an
uninterrupted run (one process, CPU). Moments found by watching the folder (mid-epoch, around checkpoints, the
final writes), and moments inside a write, where the process kills itself (half a checkpoint file, a checkpoint
swapped in but its old copy not yet removed, half a results.json)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import datasets
from test_train_support import (adapter_tensors, log_rows, results, run_cli, subprocess_env, train_args,
                                vitune_subprocess)

EPOCHS = 4
# 64 training images in batches of 4: 16 steps an epoch, long enough to be killed in the middle of one.
SETTINGS = ("--epochs", str(EPOCHS), "--batch-size", "4", "--set", "dropout=0.1", "--warmup-epochs", "1")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return datasets.make_vtab(tmp_path_factory.mktemp("data"), name="tiny", n_per_split=32, num_classes=4)


@pytest.fixture(scope="module")
def reference(task, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert run_cli(train_args(task, run, *SETTINGS))[0] == 0
    return run


def epochs_done(run) -> int:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0


def wait_for(condition, process, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run did not get there in time")
        time.sleep(0.002)


def kill(process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def assert_same_run(run, reference) -> None:
    got, want = adapter_tensors(run), adapter_tensors(reference)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)  # bit for bit
    assert results(run)["accuracy"] == results(reference)["accuracy"]
    rows, ref_rows = log_rows(run), log_rows(reference)
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))  # each epoch logged once
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]


@pytest.mark.parametrize("moment", ["before the first checkpoint", "mid-epoch after a checkpoint",
                                    "right after a checkpoint"])
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(moment, task, reference, tmp_path, capsys):
    run = tmp_path / "killed"
    process = vitune_subprocess(train_args(task, run, *SETTINGS))
    if moment == "before the first checkpoint":
        wait_for(lambda: (run / "config.yaml").is_file(), process)
    elif moment == "right after a checkpoint":
        wait_for(lambda: epochs_done(run) >= 2, process)
    else:
        wait_for(lambda: epochs_done(run) >= 1 and (run / "log.jsonl").stat().st_size > 0, process)
        time.sleep(log_rows(run)[0]["epoch_seconds"] / 2)  # half an epoch into the next one
    kill(process)
    assert not (run / "results.json").exists()

    code, out, _ = run_cli(train_args(task, run, *SETTINGS, "--resume"), capsys)
    assert code == 0 and "accuracy" in out
    assert_same_run(run, reference)


def test_resume_with_only_the_folder_and_kill_during_the_final_writes(task, reference, tmp_path, capsys):
    run = tmp_path / "killed"
    process = vitune_subprocess(train_args(task, run, *SETTINGS))
    wait_for(lambda: epochs_done(run) >= EPOCHS, process)  # trained; adapter and results may be on their way
    if process.poll() is None:
        kill(process)
    else:  # it finished first: make it as if the kill came just before results.json, the last write
        assert process.returncode == 0
        (run / "results.json").unlink()
    code, out, _ = run_cli(["train", "--out", run, "--resume"], capsys)
    assert code == 0
    assert_same_run(run, reference)


# `vitune train ARGS` in a process that SIGKILLs itself inside a write, at the moment named by argv[1].
KILLED_INSIDE_A_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vitune import atomic, cli
    from vitune.train import checkpoint

    moment, argv = sys.argv[1], sys.argv[2:]
    save_file, exchange, atomic_write = checkpoint.save_file, atomic._exchange, atomic.atomic_write
    checkpoints = []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def half_checkpoint(tensors, filename, *args, **kwargs):  # the 2nd checkpoint's tensors, cut in half
        save_file(tensors, filename, *args, **kwargs)
        checkpoints.append(filename)
        if len(checkpoints) == 2:
            os.truncate(filename, os.path.getsize(filename) // 2)
            die()

    def swapped(new, folder):  # the 2nd checkpoint swapped in, the 1st still beside it under a temporary name
        done = exchange(new, folder)
        if Path(folder).name == "checkpoint":
            checkpoints.append(folder)
            if len(checkpoints) == 1:  # the first swap is the 2nd checkpoint (the 1st was a plain rename)
                die()
        return done

    def half_results(path, write):
        if Path(path).name != "results.json":
            return atomic_write(path, write)

        def half(tmp):
            write(tmp)
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            die()

        return atomic_write(path, half)

    if moment == "half a checkpoint file":
        checkpoint.save_file = half_checkpoint
    elif moment == "checkpoint swapped, old copy not removed":
        atomic._exchange = swapped
    else:
        atomic.atomic_write = half_results
    cli.main(argv)
    sys.exit("not killed")
""")


@pytest.mark.parametrize("moment", ["half a checkpoint file", "checkpoint swapped, old copy not removed",
                                    "half a results.json"])
def test_sigkill_inside_a_write_then_resume_ends_like_an_uninterrupted_run(moment, task, reference, tmp_path, capsys):
    run = tmp_path / "killed"
    process = subprocess.run([sys.executable, "-c", KILLED_INSIDE_A_WRITE, moment,
                              *map(str, train_args(task, run, *SETTINGS))],
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers  # the write was cut: its temporary file or folder is there
    assert not (run / "results.json").exists()
    if moment != "half a results.json":
        assert epochs_done(run) == (1 if moment == "half a checkpoint file" else 2)

    code, out, _ = run_cli(["train", "--out", run, "--resume"], capsys)
    assert code == 0 and "accuracy" in out
    assert_same_run(run, reference)
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # cleaned up
