"""`vitune search` end to end: points on train800 -> val200, the winner retrained on train800val200 and
tested once; search.json; finished points reused; bad grids refused."""

from __future__ import annotations

import json

import pytest

from test_suite_support import ONE_EPOCH, TINY_FLAGS, TINY_MODEL, make_benchmark
from test_train_support import results, run_cli
from vitune.errors import ConfigError
from vitune.train.search import grid_points, parse_grid, point_name, run_search


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_benchmark(tmp_path_factory.mktemp("bench"), tasks=("eurosat",)) / "eurosat"


def search_args(root, task, *grid):
    return ["search", root, *grid, "--method", "repadapter", *TINY_MODEL, "--data", task, *ONE_EPOCH,
            "--workers", "0"]


def test_search_selects_on_validation_and_tests_once(task, tmp_path, capsys):
    root = tmp_path / "search"
    code, out, err = run_cli(search_args(root, task, "--grid", "method.scale=0.1,10"), capsys)
    assert code == 0, err
    document = json.loads((root / "search.json").read_text())
    assert document["grid"] == {"method.scale": [0.1, 10]} and document["grid_keys"] == ["method.scale"]
    assert document["splits"] == {"train": "train800", "val": "val200", "final_train": "train800val200", "test": "test"}
    points = document["points"]
    assert [p["values"] for p in points] == [{"method.scale": 0.1}, {"method.scale": 10}]
    for point in points:  # every point trained on train800 and was scored on val200, as its own run says
        r = results(root / point["folder"])
        assert (r["train_split"], r["eval_split"]) == ("train800", "val200")
        assert r["method_config"]["scale"] == point["values"]["method.scale"]
        assert point["val_accuracy"] == r["accuracy"]
    best = max(points, key=lambda p: p["val_accuracy"])  # first of the best, in grid order
    assert document["choice"]["values"] == best["values"]
    final = results(root / "final")
    assert (final["train_split"], final["eval_split"], final["selection"]) == ("train800val200", "test", "final_epoch")
    assert final["method_config"]["scale"] == best["values"]["method.scale"]
    assert document["final"]["test_accuracy"] == final["accuracy"]
    assert f"test accuracy {final['accuracy']:.2f}%" in out

    # the same command again trains nothing: every run is reused and the document is unchanged
    stamp = (root / "final" / "results.json").stat().st_mtime_ns
    assert run_cli(search_args(root, task, "--grid", "method.scale=0.1,10"), capsys)[0] == 0
    again = json.loads((root / "search.json").read_text())
    assert all(p["reused"] for p in again["points"]) and again["final"] == document["final"]
    assert (root / "final" / "results.json").stat().st_mtime_ns == stamp

    # another grid in the same root is refused
    code, _, err = run_cli(search_args(root, task, "--grid", "method.scale=1"), capsys)
    assert code == 2 and "another grid" in err


def test_search_in_python_with_two_keys(task, tmp_path):
    document = run_search(tmp_path / "s", {"lr": [0.01, 0.001], "method.r": [2]},
                          {**TINY_FLAGS, "data": str(task)})
    assert [p["folder"] for p in document["points"]] == ["points/lr=0.01,r=2", "points/lr=0.001,r=2"]
    assert results(tmp_path / "s" / "final")["method_config"]["r"] == 2


def test_grid_parsing_and_refusals(task, tmp_path, capsys):
    assert parse_grid(["lr=1e-3,0.01", "method.scale=0.1,1"]) == {"lr": [0.001, 0.01], "method.scale": [0.1, 1]}
    assert grid_points({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert point_name({"method.targets": ["q", "v"], "lr": 0.1}) == "targets=[_q_,_v_],lr=0.1"
    for bad, message in ((["lr"], "KEY=V1,V2"), (["data=a,b"], "fixes this setting"), (["lrr=1"], "did you mean 'lr'"),
                         (["lr=1,1"], "repeated"), ([], "at least one --grid")):
        with pytest.raises(ConfigError, match=message):
            parse_grid(bad)
    with pytest.raises(SystemExit):  # no selection on the test split through a search: the flag does not exist
        run_cli(search_args(tmp_path / "x", task, "--grid", "lr=0.1", "--selection", "best_eval"))
    with pytest.raises(ConfigError, match="best_eval"):
        run_search(tmp_path / "x", {"lr": [0.1]}, {**TINY_FLAGS, "data": str(task), "selection": "best_eval"})
    capsys.readouterr()
    code, _, err = run_cli(search_args(tmp_path / "x", task.parent, "--grid", "lr=0.1"), capsys)
    assert code == 3 and err.startswith("vitune: error:") and "Traceback" not in err
