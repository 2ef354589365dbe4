"""timm's Swin family: the place map, per-width sharing of shared tensors, and its checkpoints."""

from __future__ import annotations

import pytest
import torch

import vitune
from vitune.backbones import find_places
from vitune.layers import SharedTensors

from cases import TINY_CONFIGS
from helpers import image_batch, make_backbone


def test_place_map_numbers_blocks_across_stages_with_their_widths():
    places = find_places(make_backbone("swin"))
    assert places.family == "timm_swin" and places.depth == 4
    assert [b.block for b in places.blocks] == [f"layers.{s}.blocks.{j}" for s in (0, 1) for j in (0, 1)]
    assert [places.width(b) for b in places.blocks] == [32, 32, 64, 64] and places.widths == (32, 64)
    assert places.embed_dim == 32 and places.num_prefix_tokens == 0 and places.heads == ("head.fc",)
    assert places.blocks[2].linear("v") == ("layers.1.blocks.0.attn.qkv", slice(128, 192))
    assert places.describe()["widths"] == [32, 64]


def test_vit_keeps_one_width_and_its_shared_names():
    places = find_places(make_backbone("vit"))
    assert places.widths == (64,) and places.shared_name("arc_shared", 64) == "arc_shared"


@pytest.mark.parametrize(
    "method,prefix,tensors",
    [("arc", "arc_shared", ("P_attn", "P_mlp")), ("kadaptation", "kadaptation_shared", ("rule_q_left",)),
     ("compacter", "compacter_shared", ("rules",))],
)
def test_shared_tensors_are_shared_within_a_width(method, prefix, tensors):
    """One SharedTensors per stage width, as ARC's Swin code shares P per stage; each block reads its own."""
    model = vitune.apply(make_backbone("swin"), method, **TINY_CONFIGS.get(method, {}))
    holders = {name: m for name, m in model.named_children() if isinstance(m, SharedTensors)}
    assert sorted(holders) == [f"{prefix}_32", f"{prefix}_64"]
    if method == "arc":
        assert holders[f"{prefix}_32"].P_attn.shape == (32, 50) and holders[f"{prefix}_64"].P_mlp.shape == (64, 50)
    readers = {}
    for name, m in model.named_modules():
        for attr in ("_shared", "_rules"):
            holder = m.__dict__.get(attr)  # the unregistered reference to the holder
            if isinstance(holder, SharedTensors):
                readers.setdefault(name.split(".")[1], set()).add(id(holder))
    assert readers == {"0": {id(holders[f"{prefix}_32"])}, "1": {id(holders[f"{prefix}_64"])}}
    for t in tensors:
        assert getattr(holders[f"{prefix}_32"], t).data_ptr() != getattr(holders[f"{prefix}_64"], t).data_ptr()


def test_vpt_is_refused_on_windowed_attention():
    with pytest.raises(vitune.BackboneError, match="windows"):
        vitune.apply(make_backbone("swin"), "vpt_deep")
    with pytest.raises(vitune.ConfigError, match="vpt_on.*windows"):
        vitune.apply(make_backbone("swin"), "adaptformer", vpt_on=True)


def test_original_microsoft_swin_checkpoint_loads_through_timms_filter(tmp_path):
    """ARC's Swin-B file: {'model': ...} in Microsoft's layout (patch merging at the end of a stage, a head of
    another size); timm's Swin filter moves the merging layers, vitune drops the head."""
    donor, target = make_backbone("swin", seed=7), make_backbone("swin", seed=0)
    state = {}
    for k, v in donor.state_dict().items():
        if k.startswith("layers.1.downsample."):  # Microsoft's layout: stage 0 ends with the merging
            k = k.replace("layers.1.downsample.", "layers.0.downsample.")
        elif k.startswith("head.fc."):
            k, v = k.replace("head.fc.", "head."), torch.zeros(21841, *v.shape[1:])
        state[k] = v
    path = tmp_path / "swin_base_patch4_window7_224_22k.pth"
    torch.save({"model": state}, path)
    report = vitune.load_weights(target, path)
    assert sorted(report.dropped_head) == ["head.fc.bias", "head.fc.weight"] and not report.missing
    x = image_batch(target)
    with torch.no_grad():
        torch.testing.assert_close(target.forward_features(x), donor.forward_features(x), rtol=0, atol=0)
