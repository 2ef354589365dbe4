"""`vitune report` end to end: its numbers checked against the run folders, the two VTAB-1k averages, the
protocol, the comparability flags, the CSV and the plots."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from test_suite_support import TINY_FLAGS, make_benchmark
from test_train_support import run_cli
from vitune.errors import RunError
from vitune.report import write_report
from vitune.train import train
from vitune.train.suite import run_suite


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A lora suite (3 tasks x 2 seeds) and a bitfit run that chose its epoch on test."""
    base = tmp_path_factory.mktemp("report")
    bench = make_benchmark(base)
    run_suite(base / "lora", bench, TINY_FLAGS, seeds=[0, 1])
    train({**TINY_FLAGS, "method": "bitfit", "data": str(bench / "eurosat"), "selection": "best_eval"},
          base / "bitfit" / "eurosat" / "seed42")
    # a search grid point (scored on val200) is no test result: left out
    train({**TINY_FLAGS, "data": str(bench / "eurosat"), "train_split": "train800", "eval_split": "val200"},
          base / "bitfit" / "points" / "p")
    return base


def accuracies(root, task):
    return [json.loads((root / task / f"seed{s}" / "results.json").read_text())["accuracy"] for s in (0, 1)]


def test_report_numbers_match_the_run_folders(roots, tmp_path, capsys):
    code, out, err = run_cli(["report", roots / "lora", roots / "bitfit", "--out", tmp_path], capsys)
    assert code == 0, err
    assert "report of 7 runs" in out
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    lora = {r["task"]: r for r in rows if r["row"] == "lora"}
    per_task = {t: accuracies(roots / "lora", t) for t in ("cifar", "eurosat", "clevr_count")}
    for task, values in per_task.items():
        assert float(lora[task]["mean"]) == pytest.approx(statistics.fmean(values))
        assert float(lora[task]["std"]) == pytest.approx(statistics.stdev(values))
        assert (lora[task]["n"], lora[task]["seeds"]) == ("2", "0 1")
    groups = {"Natural mean": "cifar", "Specialized mean": "eurosat", "Structured mean": "clevr_count"}
    for label, task in groups.items():  # one task per group here: the group mean is that task's mean
        assert float(lora[label]["mean"]) == pytest.approx(statistics.fmean(per_task[task]))
    means = [statistics.fmean(v) for v in per_task.values()]
    assert float(lora["mean of group means"]["mean"]) == pytest.approx(statistics.fmean(means))
    assert float(lora["plain mean of tasks"]["mean"]) == pytest.approx(statistics.fmean(means))
    per_seed = [statistics.fmean(per_task[t][i] for t in per_task) for i in (0, 1)]
    assert float(lora["plain mean of tasks"]["std"]) == pytest.approx(statistics.stdev(per_seed))
    r0 = json.loads((roots / "lora" / "cifar" / "seed0" / "results.json").read_text())
    assert int(lora["cifar"]["method_params"]) == r0["counts"]["method"]

    bitfit = {r["task"]: r for r in rows if r["row"] == "bitfit"}
    assert set(bitfit) == {"eurosat", "Specialized mean", "plain mean of tasks"}  # no mean of group means: 1 group
    assert bitfit["eurosat"]["std"] == "" and "selection on the reported split" in bitfit["eurosat"]["flags"]
    assert "random-init backbone" in lora["cifar"]["flags"]

    md = (tmp_path / "report.md").read_text()
    assert "| lora |" in md and "mean of group means" in md and "plain mean of tasks" in md
    assert "3 (Natural 1/7, Specialized 1/4, Structured 1/8)" in md
    assert "| bitfit | train800val200 | test | best_eval | none | imagenet |" in md  # the protocol table
    assert "points/p/results.json`: evaluated on 'val200'" in md  # left out, with the reason
    for png in ("accuracy_vs_params.png", "per_task.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_defaults_to_the_first_root_and_refuses_empty(roots, tmp_path):
    written = write_report([roots / "lora"])
    assert written.folder == roots / "lora" and (roots / "lora" / "report.md").is_file() and written.runs == 6
    with pytest.raises(RunError, match="no finished run"):
        write_report([tmp_path])
