"""ELEVATER-style K-shot sampling (data/k_shot.py): reproducible per seed, exactly K per class, a fifth of the
shots for validation, the task's own layout and evaluation splits kept, short classes refused by name; vitune
train --k-shot lists the drawn images in the run's config.yaml."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from datasets import make_fgvc, make_imagefolder, make_vtab
from test_train_support import results, run_cli, train_args
from vitune.data import open_task
from vitune.data.k_shot import KSHOT, KSHOT_TRAIN, KSHOT_VAL, draw_k_shot, val_per_class
from vitune.data.sample import Sample
from vitune.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of 3 classes with 12 training images each."""
    return make_imagefolder(tmp_path_factory.mktemp("k"), n_per_split=36, num_classes=3, size=4)


def listed(task, split):
    return [(str(path), label) for path, label in task.samples(split)]


def test_same_seed_same_list_other_seed_other_list(folder):
    first, again = open_task(folder, k_shot=(5, 1)), open_task(folder, k_shot=(5, 1))
    assert listed(first, KSHOT) == listed(again, KSHOT)
    assert listed(first, KSHOT) != listed(open_task(folder, k_shot=(5, 2)), KSHOT)
    # the draw does not depend on anything but the split, K and the seed (Python's seeded shuffle)
    samples = [Sample(folder / f"{i}.png", i % 3, f"line {i}") for i in range(36)]
    assert draw_k_shot(samples, 5, 1, 3, "train", folder) == draw_k_shot(samples, 5, 1, 3, "train", folder)


@pytest.mark.parametrize("shots", [1, 2, 5, 10, 12])
def test_per_class_counts_are_exact(folder, shots):
    task = open_task(folder, k_shot=(shots, 0))
    every, val = listed(task, KSHOT), listed(task, KSHOT_VAL)
    assert Counter(label for _, label in every) == {0: shots, 1: shots, 2: shots}
    assert Counter(label for _, label in val) == {c: val_per_class(shots) for c in range(3)}
    assert val_per_class(shots) == -(-shots // 5)  # ELEVATER's ceil(count * 0.2)
    if shots > 1:
        train = listed(task, KSHOT_TRAIN)
        assert sorted(train + val) == sorted(every) and not set(train) & set(val)
    assert len(set(every)) == len(every)  # drawn without replacement, from the training split only
    assert all("/train/" in path for path, _ in every)


def test_the_task_keeps_its_layout_and_evaluation_split(tmp_path):
    vtab = open_task(make_vtab(tmp_path, "eurosat", n_per_split=6, num_classes=3, size=4), k_shot=(2, 0))
    assert (vtab.layout, vtab.default_train, vtab.default_eval) == ("vtab", KSHOT, "test")
    assert vtab.num_classes == 10  # the known VTAB-1k head, not the classes drawn
    fgvc = open_task(make_fgvc(tmp_path, n_per_split=6, num_classes=3, size=4), k_shot=(2, 0))
    assert (fgvc.layout, fgvc.default_eval) == ("fgvc", "test") and {"train", "val", KSHOT_VAL} <= set(fgvc.splits)
    record = fgvc.describe()["k_shot"]
    assert (record["shots"], record["seed"], record["source_split"], record["val_per_class"]) == (2, 0, "train", 1)
    assert sorted(map(tuple, record["train"] + record["val"])) == sorted(
        (str(p.relative_to(fgvc.root)), label) for p, label in fgvc.samples(KSHOT))


def test_short_classes_and_bad_pairs_are_refused(folder, tmp_path):
    with pytest.raises(DataError, match=r"class 0 has 12, class 1 has 12, class 2 has 12 \(3 of 3 classes short\)"):
        open_task(folder, k_shot=(13, 0)).samples(KSHOT)
    # VTAB-1k's known head: classes 3..9 have no image at all in this tiny eurosat
    with pytest.raises(DataError, match=r"train800val200.txt: k_shot=\(2, 0\).*class 3 has 0"):
        open_task(make_vtab(tmp_path, "eurosat", n_per_split=6, num_classes=3, size=4), k_shot=(2, 0)) \
            .samples(KSHOT)
    with pytest.raises(DataError, match="use K >= 2"):
        open_task(folder, k_shot=(1, 0)).samples(KSHOT_TRAIN)
    with pytest.raises(DataError, match="k_shot must be"):
        open_task(folder, k_shot=(0, 1))
    with pytest.raises(DataError, match="not both"):
        open_task(folder, few_shot=(1, 0), k_shot=(1, 0))


def test_vitune_train_k_shot_records_the_draw(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(train_args(folder, out, "--k-shot", "2", "7", "--epochs", "1",
                                          "--batch-size", "2"), capsys)
    assert code == 0, err
    r = results(out)
    assert (r["k_shot"], r["train_split"], r["eval_split"]) == ([2, 7], KSHOT, "test")
    data = yaml.safe_load((out / "config.yaml").read_text())["resolved"]["data"]
    drawn = open_task(folder, k_shot=(2, 7)).describe()["k_shot"]
    assert data["k_shot"] == drawn and data["train_images"] == 6
    # vitune eval re-draws the same images: the run's own validation split can be evaluated
    code, out_text, err = run_cli(["eval", out, "--split", KSHOT_VAL, "--json"], capsys)
    assert code == 0, err
    assert '"split": "kshot_val"' in out_text
    code, _, err = run_cli(train_args(folder, tmp_path / "x", "--k-shot", "2", "7", "--few-shot", "1", "0"), capsys)
    assert code == 2 and "not both" in err
