"""A run that fails while running (a NaN loss, a full disk) stops with exit code 5 and a message naming where,
writes no results.json, and keeps its last good checkpoint, from which --resume finishes the run exactly."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from safetensors.torch import load_file

import vitune.train.checkpoint as checkpoint_module
import vitune.train.runner as runner_module
from test_train_support import adapter_tensors, results, run_cli, train_args, vtab_task  # noqa: F401
from vitune.train.checkpoint import load_checkpoint

EPOCHS = ("--epochs", "3")  # the tiny VTAB task: 32 training images in batches of 8, 4 steps an epoch


@pytest.fixture(scope="module")
def reference(vtab_task, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert run_cli(train_args(vtab_task, run, *EPOCHS))[0] == 0
    return run


def nan_at_call(monkeypatch, bad_call: int) -> None:
    """Make the training loss NaN at its `bad_call`-th computation (1-based, counted over the run)."""
    build_loss = runner_module.build_loss
    calls = {"n": 0}

    def patched(*args, **kwargs):
        loss_fn = build_loss(*args, **kwargs)

        def loss(logits, labels):
            calls["n"] += 1
            value = loss_fn(logits, labels)
            return value * float("nan") if calls["n"] == bad_call else value

        return loss

    monkeypatch.setattr(runner_module, "build_loss", patched)


def assert_good_checkpoint(run, epochs_done: int) -> None:
    state = load_checkpoint(run / "checkpoint")
    assert state.epochs_done == epochs_done
    tensors = load_file(str(run / "checkpoint" / "state.safetensors"))
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())
    assert not (run / "results.json").exists()


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_checkpoint(
        vtab_task, reference, tmp_path, capsys, monkeypatch):  # noqa: F811
    run = tmp_path / "nan"
    nan_at_call(monkeypatch, bad_call=4 + 3)  # epoch 2, step 3
    code, _, err = run_cli(train_args(vtab_task, run, *EPOCHS), capsys)
    assert code == 5 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("vitune: error: epoch 2/3, step 3/4: the training loss is NaN or infinite")
    assert "the checkpoint of epoch 1/3" in message and "no results.json" in message
    assert_good_checkpoint(run, epochs_done=1)

    monkeypatch.undo()  # the cause is gone: --resume starts from the kept checkpoint and ends like a clean run
    code, _, err = run_cli(train_args(vtab_task, run, *EPOCHS, "--resume"), capsys)
    assert code == 0, err
    got, want = adapter_tensors(run), adapter_tensors(reference)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert results(run)["accuracy"] == results(reference)["accuracy"]


def test_an_absurd_learning_rate_fails_in_the_first_epoch_without_results(vtab_task, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "absurd"
    code, _, err = run_cli(train_args(vtab_task, run, *EPOCHS, "--lr", "1e30"), capsys)
    assert code == 5 and "Traceback" not in err
    assert "epoch 1/3, step" in err and "NaN or infinite" in err and "no checkpoint was written yet" in err
    assert not (run / "results.json").exists() and not (run / "checkpoint").exists()


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
        vtab_task, reference, tmp_path, capsys, monkeypatch):  # noqa: F811
    run = tmp_path / "full"
    save_file = checkpoint_module.save_file
    calls = {"n": 0}

    def fills_up(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's checkpoint: half a file, then the disk is full
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise no_space(filename)
        return save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", fills_up)
    code, _, err = run_cli(train_args(vtab_task, run, *EPOCHS), capsys)
    assert code == 5 and "Traceback" not in err
    assert "checkpoint of epoch 2 cannot be written" in err and "No space left on device" in err
    assert "previous checkpoint is intact" in err
    assert_good_checkpoint(run, epochs_done=1)
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no half-written folder

    monkeypatch.undo()
    assert run_cli(train_args(vtab_task, run, *EPOCHS, "--resume"), capsys)[0] == 0
    assert results(run)["accuracy"] == results(reference)["accuracy"]


def test_disk_full_while_writing_results_keeps_the_last_checkpoint(
        vtab_task, reference, tmp_path, capsys, monkeypatch):  # noqa: F811
    run = tmp_path / "full_at_end"

    def fills_up(self, document):
        raise no_space(self.path / "results.json")

    monkeypatch.setattr(runner_module.RunFolder, "write_results", fills_up)
    code, _, err = run_cli(train_args(vtab_task, run, *EPOCHS), capsys)
    assert code == 5 and "Traceback" not in err
    assert "a write to the run folder failed" in err and "No space left on device" in err
    assert "the checkpoint of epoch 3/3" in err
    assert_good_checkpoint(run, epochs_done=3)

    monkeypatch.undo()
    code, out, _ = run_cli(train_args(vtab_task, run, *EPOCHS, "--resume"), capsys)
    assert code == 0 and json.loads((run / "results.json").read_text())["accuracy"] == results(reference)["accuracy"]
