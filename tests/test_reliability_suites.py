"""Suites that share a RUN_ROOT: two `vitune suite` processes at once train every run exactly once and neither
corrupts the other's runs; a claim left by a dead process is taken over; a live one is waited for. A suite
killed with SIGKILL resumes only its unfinished runs."""

from __future__ import annotations

import json
import os
import signal

import torch

import datasets
from test_suite_support import ONE_EPOCH, TINY_FLAGS, TINY_MODEL, make_benchmark
from test_train_resume import epochs_done, kill, wait_for
from test_train_support import adapter_tensors, log_rows, results, run_cli, vitune_subprocess
from vitune.train.claim import claim, claim_path, owner
from vitune.train.suite import run_suite

SEEDS = (0, 1)
TASKS = ("clevr_count", "eurosat")


def suite_argv(root, bench):
    return ["suite", root, "--benchmark", bench, "--method", "lora", *TINY_MODEL, *ONE_EPOCH,
            "--loader-workers", "0", "--seeds", ",".join(map(str, SEEDS))]


def test_two_suites_at_once_train_each_run_once(tmp_path):
    bench = make_benchmark(tmp_path / "bench", tasks=TASKS)
    root = tmp_path / "suite"
    processes = [vitune_subprocess(suite_argv(root, bench)) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
        assert "Traceback" not in err

    runs = [(task, seed) for task in sorted(TASKS) for seed in SEEDS]
    trained = [line for out, _ in outputs for line in out.splitlines() if f" into {root}" in line]
    assert len(trained) == len(runs)  # each run trained by one suite only
    for task, seed in runs:
        folder = root / task / f"seed{seed}"
        r = results(folder)
        assert (r["dataset"], r["seed"]) == (task, seed)
        assert [row["epoch"] for row in log_rows(folder)] == [0]  # one epoch, logged once
        assert claim_path(folder).is_file()
    # the suite that ended last saw every run finished, by itself or by the other
    document = json.loads((root / "suite.json").read_text())
    assert {(r["task"], r["seed"]) for r in document["runs"]} == set(runs)
    assert all(r["status"] in ("trained", "finished") for r in document["runs"])
    assert not [p for p in root.rglob(".*") if p.name != ".lock"]  # no temporary leftovers


def test_a_stale_claim_is_taken_over_and_a_live_one_waited_for(tmp_path):
    bench = make_benchmark(tmp_path / "bench", tasks=("eurosat",))
    root = tmp_path / "suite"
    stale, live = (root / "eurosat" / "seed0", root / "eurosat" / "seed1")
    # a claim file left by a process that died: its pid is written, nobody holds the lock
    claim_path(stale).parent.mkdir(parents=True)
    claim_path(stale).write_text(json.dumps({"pid": 999999, "host": "gone", "since": 0}))

    messages: list[str] = []
    holder = claim(claim_path(live))
    assert holder.__enter__() is not None  # another live suite (this process, another descriptor) holds seed 1

    def progress(message: str) -> None:
        messages.append(message)
        if "being trained by another suite" in message:
            holder.__exit__(None, None, None)  # the other suite goes away without finishing the run

    document = run_suite(root, bench, {k: v for k, v in TINY_FLAGS.items()}, seeds=[0, 1], progress=progress)
    assert [r["status"] for r in document["runs"]] == ["trained", "trained"]
    assert any(f"eurosat seed 1: being trained by another suite (pid {os.getpid()} on " in m for m in messages)
    assert results(stale)["seed"] == 0 and results(live)["seed"] == 1
    assert owner(claim_path(stale)).startswith(f"pid {os.getpid()} on ")  # taken over: the file names its new owner


def test_a_killed_suite_resumes_only_its_unfinished_runs(tmp_path, capsys):
    """SIGKILL a suite while its second run is mid-training: the same command again skips the finished run,
    resumes the killed one from its checkpoint (ending like an uninterrupted run) and trains the rest."""
    bench = tmp_path / "bench"
    task = datasets.make_vtab(bench, name="eurosat", n_per_split=16, num_classes=3)
    root = tmp_path / "suite"
    settings = ["--method", "lora", *TINY_MODEL, "--epochs", "6", "--batch-size", "4", "--warmup-epochs", "0",
                "--lr", "0.01"]
    argv = ["suite", root, "--benchmark", bench, *settings, "--loader-workers", "0", "--seeds", "0,1,2"]
    first, killed, untouched = (root / "eurosat" / f"seed{s}" for s in (0, 1, 2))

    suite = vitune_subprocess(argv)
    wait_for(lambda: epochs_done(killed) >= 1, suite)
    suite.send_signal(signal.SIGSTOP)  # frozen, then checked: the second run is really unfinished
    assert (first / "results.json").is_file() and not (killed / "results.json").exists()
    assert 1 <= epochs_done(killed) < 6 and not untouched.exists()
    kill(suite)
    stamp = (first / "results.json").stat().st_mtime_ns

    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "eurosat seed 0: finished already" in out
    started = [line for line in out.splitlines() if f" into {root}" in line]  # "seed S: training into FOLDER"
    assert len(started) == 2 and "seed 1:" in started[0] and "seed 2:" in started[1]  # seed 0 is not retrained
    assert (first / "results.json").stat().st_mtime_ns == stamp  # skipped, not retrained
    statuses = [r["status"] for r in json.loads((root / "suite.json").read_text())["runs"]]
    assert statuses == ["finished", "trained", "trained"]

    # the resumed run ends as if it had never been killed, each epoch logged once
    reference = tmp_path / "reference"
    assert run_cli(["train", *settings, "--data", task, "--seed", "1", "--workers", "0", "--out", reference])[0] == 0
    assert [row["epoch"] for row in log_rows(killed)] == list(range(6))
    got, want = adapter_tensors(killed), adapter_tensors(reference)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert results(killed)["accuracy"] == results(reference)["accuracy"]
