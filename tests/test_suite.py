"""`vitune suite` end to end on a tiny VTAB-1k root: one run folder per task and seed, finished runs skipped,
unfinished ones resumed, tasks in worker processes with --workers 2."""

from __future__ import annotations

import json
import shutil

import pytest

from test_suite_support import BENCH_TASKS, ONE_EPOCH, TINY_FLAGS, TINY_MODEL, make_benchmark
from test_train_support import results, run_cli
from vitune.errors import ConfigError, DataError
from vitune.train.suite import find_tasks, run_suite, train_argv


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = make_benchmark(tmp_path_factory.mktemp("bench"))
    (root / "README").write_text("not a task")
    (root / "notes").mkdir()  # a folder that is no task is skipped
    return root


def suite_args(root, bench, *extra):
    return ["suite", root, "--benchmark", bench, "--method", "lora", *TINY_MODEL, *ONE_EPOCH,
            "--loader-workers", "0", *extra]


def test_tasks_are_found_and_kind_detected(bench):
    found = find_tasks(bench)
    assert list(found.tasks) == sorted(BENCH_TASKS) and found.kind == "VTAB-1k"
    with pytest.raises(DataError, match="dtd not in"):
        find_tasks(bench, ["dtd"])
    with pytest.raises(ConfigError, match="--seed"):
        run_suite(bench.parent / "x", bench, {**TINY_FLAGS, "seed": 1})


def test_suite_skips_finished_resumes_unfinished_and_runs_workers(bench, tmp_path, capsys):
    root = tmp_path / "suite"
    code, out, err = run_cli(suite_args(root, bench, "--tasks", "cifar", "--seeds", "0,1"), capsys)
    assert code == 0, err
    first = {s: results(root / "cifar" / f"seed{s}") for s in (0, 1)}
    assert [first[s]["seed"] for s in (0, 1)] == [0, 1] and first[0]["dataset"] == "cifar"
    assert "2/2 runs finished" in out

    # an unfinished run: its checkpoint is there, its results and adapter are not (killed during the final writes)
    (root / "cifar" / "seed1" / "results.json").unlink()
    shutil.rmtree(root / "cifar" / "seed1" / "adapter")
    stamp = (root / "cifar" / "seed0" / "results.json").stat().st_mtime_ns
    code, out, err = run_cli(suite_args(root, bench, "--tasks", "cifar", "--seeds", "0,1"), capsys)
    assert code == 0, err
    assert "cifar seed 0: finished already" in out
    assert (root / "cifar" / "seed0" / "results.json").stat().st_mtime_ns == stamp  # skipped, not retrained
    assert results(root / "cifar" / "seed1")["accuracy"] == first[1]["accuracy"]  # resumed to the same result
    statuses = {(r["task"], r["seed"]): r["status"] for r in json.loads((root / "suite.json").read_text())["runs"]}
    assert statuses == {("cifar", 0): "finished", ("cifar", 1): "trained"}

    # every task, two worker processes: the cifar runs are skipped, the other tasks train in workers
    code, out, err = run_cli(suite_args(root, bench, "--seeds", "0,1", "--workers", "2"), capsys)
    assert code == 0, err
    document = json.loads((root / "suite.json").read_text())
    assert document["kind"] == "VTAB-1k" and document["tasks"] == sorted(BENCH_TASKS) and document["workers"] == 2
    for run in document["runs"]:
        r = results(root / run["folder"])
        assert (r["dataset"], r["seed"], r["accuracy"]) == (run["task"], run["seed"], run["accuracy"])
        assert run["status"] == ("finished" if run["task"] == "cifar" else "trained")
        assert (root / run["folder"]).with_name(f"seed{run['seed']}.log").is_file() == (run["task"] != "cifar")
    assert "6/6 runs finished" in out


def test_failures_are_reported_and_the_rest_runs(bench, tmp_path, capsys):
    # a method config the method refuses: every run fails with the error recorded, the CLI says so (no traceback)
    code, _, err = run_cli(suite_args(tmp_path / "bad", bench, "--tasks", "eurosat", "--set", "r=-1"), capsys)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("vitune: error: 1 run(s) failed: eurosat/seed42")
    run = json.loads((tmp_path / "bad" / "suite.json").read_text())["runs"][0]
    assert run["status"] == "failed" and "r" in run["error"]


def test_train_argv_round_trips_through_the_cli():
    argv = train_argv({"method": "lora", "method_config": {"r": 4, "scale": "0.1"}, "amp": True, "lr": 0.001,
                       "few_shot": [2, 1], "model_kwargs": {"depth": 2}})
    assert argv == ["--method", "lora", "--set", "r=4", 'scale="0.1"', "--amp", "--lr", "0.001",
                    "--few-shot", "2", "1", "--model-kwargs", "depth=2"]
