"""Suites that share a RUN_ROOT: two `vitune suite` processes at once train every run exactly once and neither
corrupts the other's runs; a claim left by a dead process is taken over; a live one is waited for."""

from __future__ import annotations

import json
import os

from test_suite_support import ONE_EPOCH, TINY_FLAGS, TINY_MODEL, make_benchmark
from test_train_support import log_rows, results, vitune_subprocess
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
    trained = [line for out, _ in outputs for line in out.splitlines() if ": training into " in line]
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
