"""`vitune train`, `eval` and `merge` end to end on a tiny ViT and tiny datasets in each layout."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

import datasets
import vitune
from test_train_support import (
    QUICK, adapter_tensors, log_rows, results, run_cli, subprocess_env, train_args, vtab_task,  # noqa: F401
)
from vitune.train.build import load_trained

LOG_KEYS = {"epoch", "train_loss", "train_acc", "lr", "eval_acc", "epoch_seconds", "rss_mib", "accel_peak_mib"}
RESULT_KEYS = {
    "accuracy", "method", "method_config", "model", "model_kwargs", "weights", "weights_sha256", "init_seed", "data",
    "dataset", "num_classes", "train_split", "eval_split", "normalize", "img_size", "epochs", "seed", "selection",
    "counts", "adapter_bytes", "train_seconds", "peak_rss_mib", "vitune_version",
}


@pytest.fixture(scope="module")
def vtab_run(vtab_task, tmp_path_factory):
    """One finished lora run on the VTAB task, shared by the checks that only read it."""
    run = tmp_path_factory.mktemp("runs") / "lora"
    assert run_cli(train_args(vtab_task, run))[0] == 0
    return run


def test_run_folder_holds_exactly_the_promised_files(vtab_run):
    assert sorted(p.name for p in vtab_run.iterdir()) == [
        ".lock", "adapter", "checkpoint", "config.yaml", "log.jsonl", "results.json", "tensorboard",
    ]
    assert sorted(p.name for p in (vtab_run / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sorted(p.name for p in (vtab_run / "checkpoint").iterdir()) == ["state.json", "state.safetensors"]
    assert any(p.name.startswith("events.out.tfevents") for p in (vtab_run / "tensorboard").iterdir())


def test_results_log_and_config_record_the_protocol(vtab_run, vtab_task):
    r = results(vtab_run)
    assert RESULT_KEYS <= set(r)
    assert (r["method"], r["dataset"], r["num_classes"], r["train_split"], r["eval_split"]) == (
        "lora", "tiny", 4, "train800val200", "test")
    assert (r["selection"], r["weights"], r["weights_sha256"], r["init_seed"], r["normalize"], r["img_size"]) == (
        "final_epoch", None, None, 42, "imagenet", 32)
    assert r["data"] == str(vtab_task) and r["model_kwargs"]["depth"] == 2
    assert r["method_config"]["r"] == 8  # the method's whole config, defaults included
    assert r["counts"]["trainable"] == r["counts"]["method"] + r["counts"]["head"] > 0
    assert r["adapter_bytes"] == sum(p.stat().st_size for p in (vtab_run / "adapter").iterdir())
    assert r["accuracy"] > 50  # colour classes: far above chance (25%) after two epochs

    rows = log_rows(vtab_run)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(set(row) == LOG_KEYS for row in rows)
    assert rows[0]["eval_acc"] is None and rows[1]["eval_acc"] == r["accuracy"]  # evaluated after the last epoch
    assert rows[1]["accel_peak_mib"] is None and rows[1]["rss_mib"] > 0

    config = yaml.safe_load((vtab_run / "config.yaml").read_text())
    assert config["run"]["method"] == "lora" and config["run"]["lr"] == 0.01
    resolved = config["resolved"]
    assert resolved["backbone"]["weights_sha256"] is None and resolved["backbone"]["init_seed"] == 42
    assert resolved["data"]["train_split"] == "train800val200" and resolved["transforms"]["normalize"] == "imagenet"
    assert set(resolved["versions"]) >= {"vitune", "torch", "timm"}
    assert resolved["optimizer"]["opt"] == "adamw" and resolved["schedule"]["sched"] == "cosine"


def test_eval_equals_the_run_s_accuracy(vtab_run, capsys):
    accuracy = results(vtab_run)["accuracy"]
    code, out, _ = run_cli(["eval", vtab_run], capsys)
    assert code == 0 and out.startswith(f"top-1 accuracy {accuracy:.2f}% (") and "on tiny/test" in out
    code, out, _ = run_cli(["eval", vtab_run / "adapter", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["accuracy"] == accuracy and report["split"] == "test" and report["total"] == 16
    code, out, _ = run_cli(["eval", vtab_run, "--split", "val200", "--json"], capsys)
    assert code == 0 and json.loads(out)["split"] == "val200"


def test_eval_on_data_with_other_classes_is_refused(vtab_run, tmp_path, capsys):
    other = datasets.make_vtab(tmp_path, name="six", n_per_split=6, num_classes=6)
    code, _, err = run_cli(["eval", vtab_run, "--data", other], capsys)
    assert code == 3 and "6 classes, but the adapter" in err and "4-class head" in err


def test_merge_gives_a_folder_plain_timm_loads(vtab_run, tmp_path, capsys):
    merged = tmp_path / "merged"
    code, out, _ = run_cli(["merge", vtab_run, "--out", merged], capsys)
    assert code == 0 and f'local-dir:{merged}' in out
    assert sorted(p.name for p in merged.iterdir()) == ["config.json", "model.safetensors"]

    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    script = (
        "import sys, timm, torch\n"
        "from safetensors.torch import load_file, save_file\n"
        f"m = timm.create_model('local-dir:{merged}', pretrained=True).eval()\n"
        "assert not any(name.startswith('vitune') for name in sys.modules), 'vitune was imported'\n"
        f"x = load_file('{tmp_path / 'x.safetensors'}')['x']\n"
        "with torch.no_grad():\n"
        f"    save_file({{'y': m(x)}}, '{tmp_path / 'y.safetensors'}')\n"
    )
    subprocess.run([sys.executable, "-c", script], env=subprocess_env(), check=True, cwd=tmp_path)
    stock = load_file(str(tmp_path / "y.safetensors"))["y"]
    adapted, _ = load_trained(vtab_run / "adapter")
    with torch.no_grad():
        assert (stock - adapted(x)).abs().max().item() <= 1e-4

    code, _, err = run_cli(["merge", vtab_run, "--out", merged], capsys)
    assert code == 2 and "exists and is not empty" in err


@pytest.mark.parametrize("layout", ["fgvc", "imagefolder", "fewshot"])
def test_other_layouts_train_and_evaluate(layout, tmp_path, capsys):
    if layout == "fgvc":
        task = datasets.make_fgvc(tmp_path, n_per_split=16, num_classes=4, class_ids=[3, 10, 11, 40])
        splits, extra = ("train", "test"), []
    elif layout == "imagefolder":
        task = datasets.make_imagefolder(tmp_path, n_per_split=16, num_classes=4)
        splits, extra = ("train", "test"), []
    else:
        task = datasets.make_few_shot(tmp_path, shots=(4,), seeds=(1,), num_classes=4, n_test=8)
        splits, extra = ("train_meta.list.num_shot_4.seed_1", "test_meta.list"), ["--few-shot", "4", "1"]
    run = tmp_path / "run"
    code, out, _ = run_cli(train_args(task, run, "--epochs", "1", *extra), capsys)
    assert code == 0, out
    r = results(run)
    assert (r["layout"], r["train_split"], r["eval_split"], r["num_classes"]) == (layout, *splits, 4)
    assert r["transform"] == "fgvc"  # random resized crop and flip for training
    code, out, _ = run_cli(["eval", run, "--json"], capsys)
    assert json.loads(out)["accuracy"] == r["accuracy"]


def test_local_weights_are_loaded_hashed_and_checked_again(vtab_task, tmp_path, capsys):
    torch.manual_seed(7)
    donor = timm.create_model("vit_tiny_patch16_224", depth=2, embed_dim=32, num_heads=2, img_size=32, patch_size=8,
                              num_classes=0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    code, _, err = run_cli(train_args(vtab_task, run, "--weights", weights, "--epochs", "1"), capsys)
    assert code == 0 and "random init" not in err
    r = results(run)
    assert r["weights"] == str(weights) and r["init_seed"] is None
    assert r["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    rebuilt, _ = load_trained(run / "adapter")
    assert torch.equal(rebuilt.pos_embed, donor.pos_embed)  # the frozen backbone is the file's

    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # the file changes after training
    code, _, err = run_cli(["eval", run], capsys)
    assert code == 2 and "has changed since training" in err


def test_a_local_dir_backbone_is_pretrained_and_hashed(vtab_task, tmp_path, capsys):
    torch.manual_seed(5)
    donor = timm.create_model("vit_tiny_patch16_224", depth=2, embed_dim=32, num_heads=2, img_size=32, patch_size=8,
                              num_classes=4)
    folder = vitune.save_merged(donor, tmp_path / "backbone")  # timm's local-dir format, as `vitune merge` writes
    run = tmp_path / "run"
    args = ["train", "--method", "lora", "--model", f"local-dir:{folder}", "--pretrained", "--data", vtab_task,
            *QUICK, "--epochs", "1", "--out", run]
    code, _, err = run_cli(args, capsys)
    assert code == 0 and "random init" not in err
    assert results(run)["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    rebuilt, _ = load_trained(run / "adapter")
    assert torch.equal(rebuilt.pos_embed, donor.pos_embed)
    code, out, _ = run_cli(["eval", run, "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == results(run)["accuracy"]


def test_random_backbone_warns(vtab_task, tmp_path, capsys):
    code, _, err = run_cli(train_args(vtab_task, tmp_path / "run", "--epochs", "1"), capsys)
    assert code == 0 and "vitune: warning: backbone vit_tiny_patch16_224 starts from a random init (seed 42)" in err


def test_gradient_accumulation_matches_the_full_batch(vtab_task, tmp_path):
    assert run_cli(train_args(vtab_task, tmp_path / "full"))[0] == 0
    assert run_cli(train_args(vtab_task, tmp_path / "accum", "--batch-size", "4", "--grad-accum-steps", "2"))[0] == 0
    full, accum = adapter_tensors(tmp_path / "full"), adapter_tensors(tmp_path / "accum")
    assert max((full[k] - accum[k]).abs().max().item() for k in full) <= 1e-5


def test_amp_clipping_smoothing_and_best_epoch_selection(vtab_task, tmp_path):
    run = tmp_path / "run"
    args = train_args(vtab_task, run, "--amp", "--clip-grad", "1.0", "--smoothing", "0.1", "--selection", "best_eval",
                      "--epochs", "3", "--sched-on-updates")
    assert run_cli(args)[0] == 0
    r = results(run)
    assert r["precision"] == "bfloat16"  # the CPU's mixed precision
    rows = log_rows(run)
    assert all(row["eval_acc"] is not None for row in rows)  # best_eval evaluates every epoch
    assert r["selection"] == "best_eval" and r["accuracy"] == max(row["eval_acc"] for row in rows)
    assert "'test' split" in r["selection_note"] and "optimistic" in r["selection_note"]


def test_refusals_say_what_to_do(vtab_run, vtab_task, tmp_path, capsys):
    def error(args):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.splitlines()[-1].startswith("vitune: error: ") and "Traceback" not in err
        return err

    refused = error(train_args(vtab_task, vtab_run))
    assert "is not empty (adapter, checkpoint, config.yaml" in refused and "pass --resume to continue" in refused
    assert "settings differ from the run" in error(train_args(vtab_task, vtab_run, "--lr", "0.5", "--resume"))
    assert "--head bn: method 'lora' has no BatchNorm head option" in error(
        train_args(vtab_task, tmp_path / "a", "--head", "bn"))
    assert "--rounds applies to layer-wise iterative training only" in error(
        train_args(vtab_task, tmp_path / "b", "--rounds", "2"))
    assert "no split 'nope'; this task has train800, val200" in error(
        train_args(vtab_task, tmp_path / "c", "--eval-split", "nope"))
    assert "fewer than one optimizer step" in error(train_args(vtab_task, tmp_path / "d", "--batch-size", "64"))
    assert "unknown timm model 'vit_nope'" in error(
        ["train", "--method", "lora", "--model", "vit_nope", "--data", vtab_task, "--out", tmp_path / "e"])
    assert "neither a run folder" in error(["eval", tmp_path])


def test_resume_of_a_finished_run_does_nothing(vtab_run, vtab_task, capsys):
    def stamps() -> dict:  # .lock aside: every process on the folder writes its pid there (run_folder.py)
        return {p.name: p.stat().st_mtime_ns for p in vtab_run.rglob("*") if p.name != ".lock"}

    before = stamps()
    for args in (["train", "--out", vtab_run, "--resume"], train_args(vtab_task, vtab_run, "--resume")):
        code, out, _ = run_cli(args, capsys)
        assert code == 0 and "already finished" in out and "nothing to do" in out
    assert stamps() == before
