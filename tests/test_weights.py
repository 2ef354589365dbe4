"""vitune.load_weights and --weights: every file kind the seeds use, written here from tiny models, offline."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vitune
from vitune.backbones.create import create_backbone
from vitune.backbones.weights import WeightsWarning
from vitune.errors import RunError

from helpers import BACKBONE_FACTORIES, image_batch, make_backbone


def same_backbone(a: torch.nn.Module, b: torch.nn.Module, skip: str = "head") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        if not (k == skip or k.startswith(skip + ".")):
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def donor_and_target(kind: str = "vit"):
    """A 'pretrained' backbone (seed 7) and a fresh one of the same architecture to load it into."""
    return make_backbone(kind, seed=7), make_backbone(kind, seed=0)


def test_safetensors_loads_everything(tmp_path):
    donor, target = donor_and_target()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    report = vitune.load_weights(target, path)
    assert report.loaded == len(donor.state_dict()) and not (report.missing or report.unexpected or report.dropped_head)
    x = image_batch(target)
    with torch.no_grad():
        torch.testing.assert_close(target(x), donor(x), rtol=0, atol=0)


def test_head_of_another_size_is_dropped_and_the_fresh_head_kept(tmp_path):
    name, args = BACKBONE_FACTORIES["vit"]
    import timm

    torch.manual_seed(7)
    donor = timm.create_model(name, pretrained=False, **{**args, "num_classes": 10})
    target = make_backbone("vit")
    head = {k: v.clone() for k, v in target.head.state_dict().items()}
    path = tmp_path / "w.pth"
    torch.save(donor.state_dict(), path)
    report = vitune.load_weights(target, path)
    assert sorted(report.dropped_head) == ["head.bias", "head.weight"]
    for k, v in target.head.state_dict().items():
        torch.testing.assert_close(v, head[k], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(target.forward_features(image_batch(target)), donor.forward_features(image_batch(target)))


def test_mae_model_key_with_decoder_warns_about_what_it_ignores(tmp_path):
    """MAE's checkpoints: {'model': encoder (+ decoder when pre-training), ...}, no classifier."""
    donor, target = donor_and_target()
    encoder = {k: v for k, v in donor.state_dict().items() if not k.startswith("head.")}
    state = {**encoder, "mask_token": torch.zeros(1, 1, 64), "decoder_embed.weight": torch.zeros(32, 64)}
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": state, "epoch": 799}, path)
    with pytest.warns(WeightsWarning, match="decoder_embed.weight"):
        report = vitune.load_weights(target, path)
    assert report.unexpected == ["decoder_embed.weight"]  # timm's filter already drops mask_token
    same_backbone(target, donor)


def test_moco_v3_base_encoder_is_taken_from_a_pth_tar(tmp_path):
    """MoCo v3: {'state_dict': {'module.base_encoder.*', 'module.momentum_encoder.*', 'module.predictor.*'},
    'optimizer': ...}; the base encoder's head is a projection MLP, dropped."""
    donor, target = donor_and_target()
    encoder = {k: v for k, v in donor.state_dict().items() if not k.startswith("head.")}
    projector = {"head.0.weight": torch.randn(32, 64), "head.1.weight": torch.ones(32)}
    state = {f"module.base_encoder.{k}": v for k, v in {**encoder, **projector}.items()}
    state |= {f"module.momentum_encoder.{k}": v + 1 for k, v in encoder.items()}
    state["module.predictor.0.weight"] = torch.randn(32, 32)
    optimizer = {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0, 1]}]}
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": optimizer}, path)
    report = vitune.load_weights(target, path)
    assert sorted(report.dropped_head) == ["head.0.weight", "head.1.weight"] and not report.unexpected
    same_backbone(target, donor)


def openai_clip_state(model: torch.nn.Module, embed: int = 32) -> dict[str, torch.Tensor]:
    """A timm CLIP ViT's weights under OpenAI CLIP's names, with a text tower beside them."""
    renames = [
        ("blocks.", "transformer.resblocks."), ("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv.", "attn.in_proj_"),
        ("attn.proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
        ("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"),
    ]
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("head."):
            continue
        if k == "cls_token":
            k, v = "class_embedding", v.reshape(-1)
        elif k == "pos_embed":
            k, v = "positional_embedding", v[0]
        elif k.startswith("norm."):
            k = "ln_post." + k[len("norm."):]
        for old, new in renames:
            k = k.replace(old, new)
        out["visual." + k] = v
    out["visual.proj"] = torch.randn(model.embed_dim, embed)
    out |= {"token_embedding.weight": torch.randn(100, embed), "logit_scale": torch.tensor(4.6),
            "text_projection": torch.randn(embed, embed), "transformer.resblocks.0.ln_1.weight": torch.ones(embed)}
    return out


def test_openai_clip_state_dict_goes_through_timms_filter(tmp_path):
    donor, target = donor_and_target("clip")
    path = tmp_path / "ViT-B-32.pt"
    torch.save(openai_clip_state(donor), path)
    report = vitune.load_weights(target, path)
    # CLIP's projection lands on head.weight (512 x 768 in ViT-B/32): another size here, dropped.
    assert sorted(report.dropped_head) == ["head.bias", "head.weight"] and not report.missing
    same_backbone(target, donor)


def google_npz(model: torch.nn.Module, path, heads: int = 2) -> None:
    """A timm ViT's weights in Google's ViT-B_16.npz naming (the layout timm's _load_weights reads)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim = model.embed_dim
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    for i in range(len(model.blocks)):
        b, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        qkv_w, qkv_b = np.split(sd[b + "attn.qkv.weight"], 3), np.split(sd[b + "attn.qkv.bias"], 3)
        for n, name in enumerate(("query", "key", "value")):
            w[f"{g}MultiHeadDotProductAttention_1/{name}/kernel"] = qkv_w[n].T.reshape(dim, heads, -1)
            w[f"{g}MultiHeadDotProductAttention_1/{name}/bias"] = qkv_b[n].reshape(heads, -1)
        w[f"{g}MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].reshape(dim, heads, -1).transpose(1, 2, 0)
        w[f"{g}MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{g}{ln}/scale"], w[f"{g}{ln}/bias"] = sd[b + norm + ".weight"], sd[b + norm + ".bias"]
        for r in range(2):
            w[f"{g}MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[f"{g}MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_google_npz_through_timms_own_loader(tmp_path):
    donor, target = donor_and_target()
    path = tmp_path / "ViT-B_16.npz"
    google_npz(donor, path)
    report = vitune.load_weights(target, path)
    assert not report.dropped_head  # same head size: loaded too
    x = image_batch(target)
    with torch.no_grad():
        torch.testing.assert_close(target(x), donor(x), rtol=0, atol=1e-6)


def test_npz_head_of_another_size_is_kept_at_init(tmp_path):
    donor = make_backbone("vit", seed=7)
    path = tmp_path / "ViT-B_16.npz"
    google_npz(donor, path)
    name, args = BACKBONE_FACTORIES["vit"]
    import timm

    target = timm.create_model(name, pretrained=False, **{**args, "num_classes": 3})
    head = target.head.weight.detach().clone()
    report = vitune.load_weights(target, path)
    assert sorted(report.dropped_head) == ["head/bias", "head/kernel"]
    torch.testing.assert_close(target.head.weight, head, rtol=0, atol=0)
    same_backbone(target, donor)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    donor, target = donor_and_target()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": donor.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(vitune.WeightsFileError, match="could run code"):
        vitune.load_weights(target, path)


def test_a_file_that_leaves_the_backbone_partly_random_is_refused(tmp_path):
    donor, target = donor_and_target()
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("blocks.1.")}
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(vitune.WeightsFileError, match=r"left at their random init: blocks\.1\..*ignored: extra\.weight"):
        vitune.load_weights(target, path)
    with pytest.warns(WeightsWarning):
        report = vitune.load_weights(target, path, allow_missing=True)
    assert report.missing and report.unexpected == ["extra.weight"]


def test_another_architecture_is_refused_by_shape(tmp_path):
    _, target = donor_and_target()
    wide = make_backbone("dinov2_reg", seed=7)  # same width 64, other patch size and tokens
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(path))
    with pytest.raises(vitune.WeightsFileError):
        vitune.load_weights(target, path)


def test_unknown_suffix_and_missing_file(tmp_path):
    _, target = donor_and_target()
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(vitune.WeightsFileError, match="unknown weights format"):
        vitune.load_weights(target, tmp_path / "w.h5")
    with pytest.raises(vitune.WeightsFileError, match="no such weights file"):
        vitune.load_weights(target, tmp_path / "none.pth")


def test_create_backbone_weights_path_uses_load_weights(tmp_path):
    """The CLI's --weights PATH: a MAE-style .pth loads into the named timm model with a fresh seeded head."""
    donor = make_backbone("vit", seed=7)
    path = tmp_path / "mae.pth"
    torch.save({"model": {k: v for k, v in donor.state_dict().items() if not k.startswith("head.")}}, path)
    name, args = BACKBONE_FACTORIES["vit"]
    kwargs = {k: v for k, v in args.items() if k != "num_classes"}
    model, source = create_backbone(name, num_classes=5, model_kwargs=kwargs, weights=path, init_seed=3)
    same_backbone(model, donor)
    again, _ = create_backbone(name, num_classes=5, model_kwargs=kwargs, weights=path, init_seed=3)
    torch.testing.assert_close(again.head.weight, model.head.weight, rtol=0, atol=0)  # the head re-created exactly
    assert source["weights_sha256"]
    torch.save({"model": {"blocks.0.norm1.weight": torch.ones(64)}}, path)
    with pytest.raises(RunError, match="--weights .*left at their random init"):
        create_backbone(name, num_classes=5, model_kwargs=kwargs, weights=path)
