"""`vitune merge` writes only exports timm can rebuild: a merge that gives a layer a bias no timm constructor
argument brings back (RepAdapter before fc1 on a ViT built with proj_bias=False: timm ties fc1's and fc2's bias
to proj's) is refused with a message naming the tensor, and leaves no folder; where the arguments do cover the
merge (SSF there gives qkv, proj, fc1 and fc2 biases: qkv_bias and proj_bias), the export loads strictly."""

from __future__ import annotations

import pytest
import timm
import torch

import datasets
from test_train_support import run_cli
from vitune.train.build import load_trained

NO_BIASES = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "depth=2", "embed_dim=32", "num_heads=2",
             "img_size=32", "patch_size=8", "qkv_bias=false", "proj_bias=false"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return datasets.make_vtab(tmp_path_factory.mktemp("data"), "tiny", n_per_split=8, num_classes=3)


def trained(task, out, method: str):
    args = ["train", "--method", method, *NO_BIASES, "--data", task, "--epochs", "1", "--batch-size", "4",
            "--warmup-epochs", "0", "--lr", "0.05", "--workers", "0", "--out", out]
    assert run_cli(args)[0] == 0
    return out


def test_a_merge_timm_cannot_rebuild_is_refused_and_leaves_nothing(task, tmp_path, capsys):
    run = trained(task, tmp_path / "run", "repadapter")
    code, _, err = run_cli(["merge", run, "--out", tmp_path / "merged"], capsys)
    assert code == 2 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("vitune: error: method 'repadapter' merges into this backbone, but timm cannot "
                              "rebuild the merged model from its config: blocks.0.mlp.fc1.bias (the merge's, not "
                              "the rebuilt model's), blocks.1.mlp.fc1.bias")
    assert f"use the adapter unmerged (vitune eval {run})" in message
    assert not (tmp_path / "merged").exists()
    (tmp_path / "empty").mkdir()  # a folder the user made stays, empty
    assert run_cli(["merge", run, "--out", tmp_path / "empty"], capsys)[0] == 2
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_merge_the_arguments_cover_loads_strictly_in_timm(task, tmp_path, capsys):
    run = trained(task, tmp_path / "run", "ssf")
    code, _, err = run_cli(["merge", run, "--out", tmp_path / "merged"], capsys)
    assert code == 0, err
    plain = timm.create_model(f"local-dir:{tmp_path / 'merged'}", pretrained=True).eval()  # strict load
    adapted, _ = load_trained(run / "adapter")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (plain(images) - adapted(images)).abs().max() < 1e-4
