"""AdaptFormer's recipe pieces: the BatchNorm head (--head bn) and layer-wise iterative training (--rounds)."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_train_support import log_rows, results, run_cli, train_args, vtab_task  # noqa: F401
from vitune.train.build import load_trained
from vitune.train.checkpoint import load_checkpoint

MULTI = ("--set", "adpnum_option=multi", "ffn_num=[4,4]", "--head", "bn", "--epochs", "1", "--lr", "0.05")


@pytest.fixture(scope="module")
def multi_run(vtab_task, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "multi"
    assert run_cli(train_args(vtab_task, run, *MULTI, "--rounds", "2", method="adaptformer"))[0] == 0
    return run


def test_rounds_train_one_adapter_at_a_time_with_fresh_sgd(multi_run):
    rows = log_rows(multi_run)
    # 2 rounds x 2 adapters x 1 epoch, every epoch logged with its round, adapter and the process memory
    assert [(r["epoch"], r["round"], r["adapter"]) for r in rows] == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    assert all(r["rss_mib"] > 0 for r in rows)
    config = yaml.safe_load((multi_run / "config.yaml").read_text())
    assert (config["run"]["opt"], config["run"]["momentum"]) == ("sgd", 0.9)
    assert config["resolved"]["schedule"]["phases"] == 4
    r = results(multi_run)
    assert (r["rounds"], r["epochs"], r["total_epochs"]) == (2, 1, 4)
    # afterwards every adapter is trainable again, as a reloaded adapter is
    assert r["counts"]["trainable"] == r["counts"]["method"] + r["counts"]["head"]
    # the checkpoint holds the last phase's fresh SGD state: momentum for adapter 1 and the head only
    state = load_checkpoint(multi_run / "checkpoint")
    assert state.phase == 3 and len(state.optimizer["state"]) == 2 * 4 + 2  # 2 blocks x (down, up) x 2 + head


def test_bn_head_is_saved_with_its_running_statistics(multi_run):
    tensors = load_file(str(multi_run / "adapter" / "adapter_model.safetensors"))
    assert {"head.0.running_mean", "head.0.running_var", "head.1.weight", "head.1.bias"} <= set(tensors)
    model, _ = load_trained(multi_run / "adapter")
    bn = model.head[0]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # statistics were gathered


def test_every_adapter_learned_in_its_own_phase(multi_run):
    tensors = load_file(str(multi_run / "adapter" / "adapter_model.safetensors"))
    ups = [t for t in tensors.values() if tuple(t.shape) == (32, 4)]  # width 4 -> 32: the up projections
    assert len(ups) == 2 * 2  # 2 blocks x 2 adapters
    assert all(t.abs().max() > 0 for t in ups)  # they start at zero: each one trained in its phase


def test_non_mergeable_method_is_refused_with_its_reason(multi_run, tmp_path, capsys):
    assert run_cli(["merge", multi_run, "--out", tmp_path / "merged"]) == (2, "", "")
    err = capsys.readouterr().err
    assert "vitune: error: method 'adaptformer' cannot be merged: its bottleneck has a ReLU" in err
    assert not (tmp_path / "merged").exists()
