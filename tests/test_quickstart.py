"""The quickstart job: its embedded data, the VTAB-1k folder it writes, and the job end to end on a tiny
random backbone (a few dozen images, one epoch) with its table, JSON and plot."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from vitune.data import open_task
from vitune.errors import RunError
from vitune.quickstart import CLASSES, load_subset, main, run, write_task
from vitune.quickstart import job as job_module
from vitune.quickstart.data import SUBSET

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
TINY = dict(model="vit_tiny_patch16_224", model_kwargs=dict(patch_size=8, depth=1, embed_dim=32, num_heads=2),
            img_size=16, epochs=1, batch_size=8, train_per_class=3, test_per_class=2,
            throughput_seconds=0.01, check_images=8)

pytestmark = pytest.mark.filterwarnings("ignore::vitune.backbones.create.RandomBackboneWarning")


def test_embedded_subset_is_balanced_real_and_small():
    assert SUBSET.stat().st_size < 3_000_000
    assert (SUBSET.parent / "LICENSE.fashion-mnist").is_file()
    d = load_subset()
    assert d["train_images"].shape == (3000, 28, 28) and d["test_images"].shape == (1000, 28, 28)
    assert d["train_images"].dtype == d["test_images"].dtype == np.uint8
    assert np.bincount(d["train_labels"]).tolist() == [300] * 10
    assert np.bincount(d["test_labels"]).tolist() == [100] * 10
    assert len(set(d["train_index"].tolist())) == 3000 and d["train_index"].max() < 60000
    assert len(set(d["test_index"].tolist())) == 1000 and d["test_index"].max() < 10000
    assert d["train_images"].std() > 50  # real pictures, not blanks
    assert len(CLASSES) == 10


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_script_regenerates_the_file_bit_for_bit(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_fashion_subset
    finally:
        sys.path.pop(0)
    out = tmp_path / "subset.npz"
    assert make_fashion_subset.main(["--out", str(out)]) == 0
    assert out.read_bytes() == SUBSET.read_bytes()


def test_written_task_is_a_vtab_folder(tmp_path):
    folder = write_task(tmp_path / "fashion_mnist", train_per_class=5, test_per_class=2)
    task = open_task(folder)
    assert (task.layout, task.num_classes) == ("vtab", 10)
    assert (task.default_train, task.default_eval) == ("train800val200", "test")
    sizes = {split: len(task.samples(split)) for split in task.splits}
    assert sizes == {"train800": 40, "val200": 10, "train800val200": 50, "test": 20}
    train = {p for p, _ in task.samples("train800")}
    assert train.isdisjoint(p for p, _ in task.samples("val200"))
    assert np.bincount([label for _, label in task.samples("val200")]).tolist() == [1] * 10
    image, label = task.dataset("test")[0]
    assert image.size == (28, 28) and 0 <= label < 10
    # the same request keeps the folder; another writes it again
    before = (folder / "test.txt").stat().st_mtime_ns
    assert write_task(folder, train_per_class=5, test_per_class=2) == folder
    assert (folder / "test.txt").stat().st_mtime_ns == before
    write_task(folder, train_per_class=5, test_per_class=3)
    assert len(open_task(folder).samples("test")) == 30


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_job_end_to_end(tmp_path):
    lines: list[str] = []
    methods = ("linear", "lora", "repadapter", "adaptformer")
    result = run(tmp_path / "qs", methods, log=lines.append, **TINY)
    assert [r["method"] for r in result.rows] == list(methods)
    assert result.merges_ok
    for row in result.rows:
        assert 0 <= row["accuracy"] <= 100 and row["eval_images"] == 20
        assert row["trainable"] > 0 and row["adapter_bytes"] > 0 and row["train_seconds"] >= 0
        assert (Path(row["run"]) / "results.json").is_file()
        assert row["throughput"]["plain"] > 0
    mergeable = {r["method"]: r["merge"] for r in result.rows}
    assert mergeable["adaptformer"] is None
    for name in ("linear", "lora", "repadapter"):
        assert mergeable[name]["ok"] and mergeable[name]["max_abs_logit_diff"] < 1e-4
        assert mergeable[name]["vitune_modules_left"] == []
    assert not any("reused" in line for line in lines)

    out = tmp_path / "qs"
    record = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in record["rows"]] == list(methods)
    assert record["summary"]["data"] == {**record["summary"]["data"], "train_images": 30, "test_images": 20}
    assert set(record["summary"]["targets"]["gains"]) == {"lora", "repadapter", "adaptformer"}
    table = (out / "results.md").read_text()
    assert "| method | accuracy | trainable parameters |" in table
    assert all(f"| {m} |" in table for m in methods) and "not mergeable" in table
    width, height = _png_size(out / "accuracy_vs_parameters.png")
    assert width > 300 and height > 200

    # again: the finished runs are reused, not trained again; --fresh trains again
    again = run(out, ("linear",), log=lines.append, **TINY)
    assert again.rows[0]["reused"] and again.rows[0]["accuracy"] == result.rows[0]["accuracy"]
    fresh = run(out, ("linear",), log=lines.append, fresh=True, **TINY)
    assert not fresh.rows[0]["reused"]


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    run(tmp_path, ("linear",), log=lambda line: None, **TINY)
    with pytest.raises(RunError, match="--fresh"):
        run(tmp_path, ("linear",), log=lambda line: None, **{**TINY, "seed": 1})


def test_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(job_module, "throughput", lambda models, *a, **k: dict.fromkeys(models, 100.0))
    code = main(["--out", str(tmp_path), "--methods", "linear", "lora", "--model", "vit_tiny_patch16_224",
                 "--img-size", "16", "--epochs", "1", "--batch-size", "8", "--train-per-class", "2",
                 "--test-per-class", "1", "--set", "lora.r=2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "trainable parameters" in captured.out and "written to" in captured.out
    assert json.loads((tmp_path / "results.json").read_text())["rows"][1]["method_config"]["r"] == 2
    assert main(["--out", str(tmp_path / "x"), "--methods", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--set", "r=2"]) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
