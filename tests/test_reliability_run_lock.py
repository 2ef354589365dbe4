"""One process per run folder: `vitune train` holds its run folder (an flock on RUN/.lock) for the whole run, so a
second `vitune train` on it (with or without --resume) fails at once with exit code 6, naming the folder and the
holder; the hold dies with its process, even by SIGKILL, and even while a forked DataLoader worker of the killed
process lives on. `vitune search` holds its root the same way; `vitune eval` and `merge` only read."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import datasets
from test_suite_support import ONE_EPOCH, TINY_MODEL, make_benchmark
from test_train_resume import kill, wait_for
from test_train_support import log_rows, results, run_cli, subprocess_env, train_args, vitune_subprocess
from vitune.errors import BUSY
from vitune.train.claim import LOCK, claim

EPOCHS = ("--epochs", "3")
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return datasets.make_vtab(tmp_path_factory.mktemp("data"), name="tiny", n_per_split=16, num_classes=4)


def holder_record(folder) -> dict:
    try:
        return json.loads((folder / LOCK).read_text())
    except (OSError, ValueError):
        return {}


def stop_when_holding(process, folder) -> None:
    """Wait until `process` holds `folder` (its pid is in the lock file), then freeze it there (SIGSTOP): it keeps
    the lock however long the other process takes to start."""
    wait_for(lambda: holder_record(folder).get("pid") == process.pid, process)
    process.send_signal(signal.SIGSTOP)


def assert_busy(code: int, err: str, what: str, folder, holder_pid: int) -> None:
    assert code == BUSY == 6 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"vitune: error: {what} {folder} is in use by another vitune process "
                              f"(pid {holder_pid} on {HOST})")
    assert "wait until that one ends" in message


def test_a_second_train_on_a_held_run_folder_fails_at_once_and_sigkill_frees_it(task, tmp_path, capsys):
    run = tmp_path / "run"
    first = vitune_subprocess(train_args(task, run, *EPOCHS))
    try:
        stop_when_holding(first, run)
        # a second real process: `--resume` on the folder the first one is training into
        second = vitune_subprocess(train_args(task, run, *EPOCHS, "--resume"))
        _, err = second.communicate(timeout=120)
        assert_busy(second.returncode, err, "run folder", run, first.pid)
        # a fresh run into the same --out is refused the same way (not as "not empty": the folder is busy)
        code, _, err = run_cli(train_args(task, run, *EPOCHS), capsys)
        assert_busy(code, err, "run folder", run, first.pid)
        assert not (run / "results.json").exists()
    finally:
        kill(first)  # SIGKILL, mid-run: the kernel drops its lock

    descriptors = len(os.listdir("/proc/self/fd"))
    code, out, err = run_cli(train_args(task, run, *EPOCHS, "--resume"), capsys)
    assert code == 0, err
    assert [row["epoch"] for row in log_rows(run)] == [0, 1, 2] and results(run)["accuracy"] is not None
    assert holder_record(run)["pid"] == os.getpid()  # the lock file names its last holder
    assert len(os.listdir("/proc/self/fd")) == descriptors  # and the hold ended with the run
    with claim(run / LOCK) as fd:
        assert fd is not None


# A process that holds a claim and iterates a DataLoader whose worker (forked, as on Linux) hangs in
# __getitem__, as one decoding a slow image would; it prints the worker's pid.
HOLDER_WITH_WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch.utils.data
    from vitune.train.claim import claim

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            print("worker", os.getpid(), flush=True)
            time.sleep(120)
            return index

    with claim(Path(sys.argv[1])):
        for batch in torch.utils.data.DataLoader(Slow(), num_workers=1, multiprocessing_context="fork"):
            pass
""")


def test_a_forked_dataloader_worker_does_not_keep_a_killed_process_s_lock(tmp_path):
    lock = tmp_path / "run" / LOCK
    process = subprocess.Popen([sys.executable, "-c", HOLDER_WITH_WORKER, str(lock)], env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        line = process.stdout.readline()
        assert line.startswith("worker "), process.stderr.read()
        worker = int(line.split()[1])
        with claim(lock) as fd:
            assert fd is None  # held by the live process
        kill(process)
        os.kill(worker, 0)  # the worker outlives its parent (it is asleep, not polling for the parent's death)
        with claim(lock) as fd:
            assert fd is not None  # yet the lock went with the killed process
    finally:
        if process.poll() is None:
            kill(process)
        if worker is not None:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass


def search_args(root, task):
    return ["search", root, "--grid", "lr=0.01", "--method", "lora", *TINY_MODEL, "--data", task, *ONE_EPOCH,
            "--workers", "0"]


def test_a_second_search_on_a_held_root_fails_at_once(tmp_path, capsys):
    task = make_benchmark(tmp_path / "bench", tasks=("eurosat",)) / "eurosat"
    root = tmp_path / "search"
    first = vitune_subprocess(search_args(root, task))
    try:
        stop_when_holding(first, root)
        code, _, err = run_cli(search_args(root, task), capsys)
        assert_busy(code, err, "search folder", root, first.pid)
    finally:
        kill(first)
    code, _, err = run_cli(search_args(root, task), capsys)  # the search goes on once the first is gone
    assert code == 0, err
    assert json.loads((root / "search.json").read_text())["final"]["test_accuracy"] is not None


def test_eval_and_merge_only_read_a_held_run_folder(task, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(train_args(task, run, "--epochs", "1"), capsys)[0] == 0
    with claim(run / LOCK) as fd:  # another process holds it (a descriptor of its own: flock cannot tell)
        assert fd is not None
        code, out, err = run_cli(["eval", run], capsys)
        assert code == 0 and "top-1 accuracy" in out, err
        code, _, err = run_cli(["merge", run, "--out", tmp_path / "merged"], capsys)
        assert code == 0, err
        code, _, err = run_cli(train_args(task, run, "--epochs", "1", "--resume"), capsys)
        assert code == BUSY  # even a finished run: the holder may be writing it


@pytest.mark.parametrize("workers", [0, 1], ids=["in the suite's process", "in a worker process"])
def test_a_suite_run_whose_folder_is_held_fails_with_exit_6(workers, tmp_path, capsys):
    bench = make_benchmark(tmp_path / "bench", tasks=("eurosat",))
    root = tmp_path / "suite"
    (root / "eurosat" / "seed0").mkdir(parents=True)
    with claim(root / "eurosat" / "seed0" / LOCK) as fd:  # a hand-started `vitune train --resume` holds it
        assert fd is not None
        code, _, err = run_cli(["suite", root, "--benchmark", bench, "--method", "lora", *TINY_MODEL, *ONE_EPOCH,
                                "--loader-workers", "0", "--seeds", "0", "--workers", str(workers)], capsys)
    assert code == BUSY, err
    [record] = json.loads((root / "suite.json").read_text())["runs"]
    assert record["status"] == "failed" and record["exit_code"] == BUSY
    assert "is in use by another vitune process" in record["error"]
