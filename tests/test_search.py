"""`vitune search` end to end: points on train800 -> val200, the winner retrained on train800val200 and
tested once; search.json; finished points reused; bad grids refused; PEViT's strategy (its bisection on its own
grid, and end to end on K-shot data); a recipe's published search."""

from __future__ import annotations

import json
import math

import pytest
import yaml

import datasets
from test_suite_support import ONE_EPOCH, TINY_FLAGS, TINY_MODEL, make_benchmark
from test_train_support import results, run_cli
from vitune.errors import ConfigError, DataError
from vitune.train.search import grid_points, parse_grid, point_name, run_search
from vitune.train.search_pevit import PevitStrategy, WeightDecayGrid


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


def test_pevit_bisection_visits_pevits_points():
    """PEViT's sweep on its own grid, scored by a function with one peak: 7 decades, then spans 8, 4, 2, 1."""
    visited = []

    def score(values, stage):
        visited.append((values["lr"], values["weight_decay"], stage))
        index = round((math.log10(values["weight_decay"]) + 6) * 8)  # the point's index on the 97-point grid
        return -abs(index - 37) - (0 if values["lr"] == 1e-3 else 1)  # best: lr 1e-3, index 37

    strategy = PevitStrategy()
    assert strategy.lrs == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    assert strategy.wd.value(0) == pytest.approx(1e-6) and strategy.wd.value(96) == pytest.approx(1e6)
    assert strategy.wd.coarse_indices == [0, 16, 32, 48, 64, 80, 96] and strategy.wd.spans == [8, 4, 2, 1]
    chosen = strategy.choose(score)
    assert chosen["lr"] == 1e-3 and chosen["weight_decay"] == pytest.approx(strategy.wd.value(37))
    at_lr = [(round((math.log10(wd) + 6) * 8), stage) for lr, wd, stage in visited if lr == 1e-3]
    # the peak moves 32 -> 40 -> 36 -> (38 only ties) -> 37; each span tries both sides of the peak it starts from
    assert [i for i, _ in at_lr] == [0, 16, 32, 48, 64, 80, 96, 24, 40, 36, 44, 34, 38, 35, 37]
    assert at_lr[7][1] == "lr=0.001: span 8" and len(visited) == 6 * 15
    with pytest.raises(ConfigError, match="coarse"):
        WeightDecayGrid.parse("-6,6,96,7")


def test_pevit_strategy_on_k_shot_data_end_to_end(tmp_path, capsys):
    """--strategy pevit on K images per class: 2 learning rates x (2 decade points + 1 bisection point), one epoch
    per point; the points train on kshot_train and are scored on kshot_val, the winner retrains on all K shots."""
    task = datasets.make_imagefolder(tmp_path, n_per_split=18, num_classes=3, size=8)
    root = tmp_path / "pevit"
    args = ["search", root, "--strategy", "pevit", "--grid", "lr=0.001,0.01", "--pevit-wd-grid=-4,-2,3,2",
            "--point-epochs", "1", "--k-shot", "5", "1", "--method", "lora", *TINY_MODEL, "--data", task,
            *ONE_EPOCH, "--workers", "0"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    document = json.loads((root / "search.json").read_text())
    assert document["strategy"]["name"] == "pevit" and document["strategy"]["lr"] == [0.001, 0.01]
    assert document["splits"] == {"train": "kshot_train", "val": "kshot_val", "final_train": "kshot", "test": "test"}
    assert document["k_shot"] == [5, 1] and document["point_epochs"] == 1
    points = document["points"]
    assert [(p["values"]["lr"], p["stage"].split(": ")[1]) for p in points] == [
        (lr, stage) for lr in (0.001, 0.01) for stage in ("decades", "decades", "span 1")]
    for point in points:
        assert point["values"]["weight_decay"] == pytest.approx([1e-4, 1e-2, 1e-3][points.index(point) % 3])
        r = results(root / point["folder"])
        assert (r["train_split"], r["eval_split"], r["k_shot"]) == ("kshot_train", "kshot_val", [5, 1])
        assert point["val_accuracy"] == r["accuracy"]
    # the choice is PEViT's: per lr the best decade point, replaced by the bisection point only if strictly better
    best = None
    for lr_points in (points[:3], points[3:]):
        peak = max(lr_points[:2], key=lambda p: p["val_accuracy"])
        peak = lr_points[2] if lr_points[2]["val_accuracy"] > peak["val_accuracy"] else peak
        best = peak if best is None or peak["val_accuracy"] > best["val_accuracy"] else best
    assert document["choice"]["values"] == best["values"]
    final = results(root / "final")
    assert (final["train_split"], final["eval_split"]) == ("kshot", "test")
    assert (final["lr"], final["weight_decay"]) == (best["values"]["lr"], best["values"]["weight_decay"])
    # the drawn images are listed in the run's config.yaml: 4 per class trained, 1 per class validated
    drawn = yaml.safe_load((root / "final" / "config.yaml").read_text())["resolved"]["data"]["k_shot"]
    assert (len(drawn["train"]), len(drawn["val"]), drawn["seed"]) == (12, 3, 1)
    assert f"test accuracy {final['accuracy']:.2f}%" in out


def test_the_recipes_published_search_is_used_without_grid(task, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: lora\nsearch:\n  grid:\n    lr: [0.01, 0.001]\n")
    document = run_search(tmp_path / "s", None, {**TINY_FLAGS, "data": str(task), "recipe": str(recipe)})
    assert document["grid"] == {"lr": [0.01, 0.001]} and len(document["points"]) == 2
    with pytest.raises(ConfigError, match="publishes no search"):
        run_search(tmp_path / "t", None, {**TINY_FLAGS, "data": str(task), "recipe": "lora_vtab"})
    with pytest.raises(ConfigError, match="may only list lr"):
        run_search(tmp_path / "t", {"weight_decay": [0.1]}, {**TINY_FLAGS, "data": str(task)}, strategy="pevit")
    code, _, err = run_cli(search_args(tmp_path / "u", task), capsys)
    assert code == 2 and "needs --grid" in err


def test_a_diverging_point_is_recorded_and_skipped(task, tmp_path):
    document = run_search(tmp_path / "s", {"lr": [1e30, 0.01]}, {**TINY_FLAGS, "data": str(task)})
    diverged, trained = document["points"]
    assert diverged["val_accuracy"] is None and "NaN or infinite" in diverged["error"]
    assert document["choice"]["values"] == {"lr": 0.01} == trained["values"]


def test_k_shot_short_classes_are_refused_before_training(tmp_path):
    task = datasets.make_imagefolder(tmp_path, n_per_split=6, num_classes=3, size=8)
    with pytest.raises(DataError, match="class 0 has 2"):
        run_search(tmp_path / "s", {"lr": [0.01]}, {**TINY_FLAGS, "data": str(task), "k_shot": [3, 0]})
    assert not (tmp_path / "s" / "points").exists()
