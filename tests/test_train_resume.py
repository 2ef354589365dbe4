"""Exact resume: a run killed with SIGKILL at any moment and continued with --resume ends bit for bit like an
uninterrupted run (one process, CPU)."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

import datasets
from test_train_support import adapter_tensors, log_rows, results, run_cli, train_args, vitune_subprocess

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
