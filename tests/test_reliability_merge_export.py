"""`vitune merge` writes only exports timm can rebuild. A merge gives biases to the layers it folds into, and
timm's flags give them to whole groups (proj_bias: proj, fc1 and fc2 of every block), so the rest of such a
group gets a zero bias and the export loads strictly (RepAdapter before fc1 and SSF on a ViT built with
qkv_bias=False and proj_bias=False). Where a family could not complete a merge, the export is refused with a
message naming the tensors, and no folder is left."""

from __future__ import annotations

import dataclasses

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


def test_a_merge_timm_cannot_rebuild_is_refused_and_leaves_nothing(task, tmp_path, capsys, monkeypatch):
    from vitune.backbones import base, timm_vit

    run = trained(task, tmp_path / "run", "repadapter")
    # the timm ViT family without its completion: as a family whose flags cannot cover what a merge added
    stuck = dataclasses.replace(timm_vit.TIMM_VIT, complete_merge=lambda model: None)
    monkeypatch.setattr(base, "_FAMILIES", [stuck if f is timm_vit.TIMM_VIT else f for f in base._FAMILIES])
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


@pytest.mark.parametrize("method", ["repadapter", "ssf"])
def test_a_merge_the_arguments_cover_loads_strictly_in_timm(method, task, tmp_path, capsys):
    run = trained(task, tmp_path / "run", method)
    code, _, err = run_cli(["merge", run, "--out", tmp_path / "merged"], capsys)
    assert code == 0, err
    plain = timm.create_model(f"local-dir:{tmp_path / 'merged'}", pretrained=True).eval()  # strict load
    block = plain.blocks[0]
    if method == "repadapter":  # the merge gave fc1 its bias; proj and fc2 got zeros for proj_bias=True
        assert block.mlp.fc1.bias.abs().sum() > 0 and block.attn.qkv.bias.abs().sum() > 0
        assert not block.attn.proj.bias.any() and not block.mlp.fc2.bias.any()
    adapted, _ = load_trained(run / "adapter")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (plain(images) - adapted(images)).abs().max() < 1e-4
