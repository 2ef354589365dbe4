"""`vitune suite` end to end on a tiny VTAB-1k root: one run folder per task and seed, finished runs skipped,
unfinished ones resumed, tasks in worker processes with --workers 2; a search per task and seed (--grid) read
by vitune report with its choices; --k-shot K drawn with each run's seed."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

import datasets
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


def test_suite_searches_every_task_and_the_report_shows_the_choices(bench, tmp_path, capsys):
    """--grid makes every task and seed a vitune search (points on val200, the winner tested once); finished
    searches are skipped; a worker process runs one too; vitune report reads the final runs and their choices."""
    root = tmp_path / "searched"
    grid = ("--grid", "lr=0.01,0.001")
    code, out, err = run_cli(suite_args(root, bench, "--tasks", "cifar,eurosat", "--seeds", "0", *grid), capsys)
    assert code == 0, err
    document = json.loads((root / "suite.json").read_text())
    assert document["search"]["grid"] == {"lr": [0.01, 0.001]}
    for run in document["runs"]:
        search = json.loads((root / run["folder"] / "search.json").read_text())
        assert [p["values"] for p in search["points"]] == [{"lr": 0.01}, {"lr": 0.001}]
        assert search["final"]["test_accuracy"] == run["accuracy"] == results(root / run["folder"] / "final")["accuracy"]
    code, out, err = run_cli(suite_args(root, bench, "--tasks", "cifar,eurosat", "--seeds", "0", *grid), capsys)
    assert code == 0 and out.count("finished already") == 2

    # the third task in a worker process (vitune search with the same flags)
    code, out, err = run_cli(suite_args(root, bench, "--seeds", "0", *grid, "--workers", "1"), capsys)
    assert code == 0, err
    assert json.loads((root / "clevr_count" / "seed0" / "search.json").read_text())["final"] is not None
    assert (root / "clevr_count" / "seed0.log").is_file() and "3/3 runs finished" in out

    code, out, err = run_cli(["report", root, "--out", tmp_path / "report"], capsys)
    assert code == 0, err
    assert "report of 3 runs" in out  # the finals; the 6 points are left out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Searched hyper-parameters" in md and "grid on val200" in md
    for task in BENCH_TASKS:
        search = json.loads((root / task / "seed0" / "search.json").read_text())
        chosen = f"lr={search['choice']['values']['lr']}"
        assert f"| lora | {task} | 0 | {chosen} | {search['choice']['val_accuracy']:.2f} (val200) | " \
               f"{search['final']['test_accuracy']:.2f} |" in md
    rows = {r["task"]: r for r in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    assert float(rows["cifar"]["mean"]) == pytest.approx(
        json.loads((root / "cifar" / "seed0" / "search.json").read_text())["final"]["test_accuracy"])


def test_suite_k_shot_draws_per_seed(tmp_path, capsys):
    bench = tmp_path / "bench"
    for name in ("a", "b"):
        datasets.make_imagefolder(bench, name, n_per_split=9, num_classes=3, size=8)
    root = tmp_path / "kshot"
    code, _, err = run_cli(["suite", root, "--benchmark", bench, "--method", "lora", *TINY_MODEL, "--epochs", "1",
                            "--batch-size", "2", "--warmup-epochs", "0", "--loader-workers", "0", "--k-shot", "2",
                            "--seeds", "0,1"], capsys)
    assert code == 0, err
    for task in ("a", "b"):
        draws = [results(root / task / f"seed{s}")["k_shot"] for s in (0, 1)]
        assert draws == [[2, 0], [2, 1]]
    assert json.loads((root / "suite.json").read_text())["k_shot_shots"] == 2
