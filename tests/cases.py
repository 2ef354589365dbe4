"""Per-method settings for the registry-driven test grid (tests/test_contract.py), and its Hugging Face backbones.

Every registered method is tested; a method needs an entry here only when its defaults do not fit the
tiny 64-wide backbones or when a check must be told something about it.
"""

import torch
from torch import nn

# Config overrides that make a method fit the tiny backbones.
TINY_CONFIGS: dict[str, dict] = {
    "consolidator": {"fc_groups": [16]},
    "kadaptation": {"n": 8},
}

# Methods whose stored form is a re-parameterisation (sums folded at save time): the reloaded model
# equals the saved one up to float rounding instead of bit for bit.
ROUNDTRIP_ATOL: dict[str, float] = {
    "consolidator": 1e-6,
}

# Methods whose math does not apply to a backbone family, with a phrase of the error they must raise there.
# The grid runs every other (method, backbone) pair; these pairs are checked to refuse, never skipped.
NOT_ON_BACKBONE: dict[tuple[str, str], str] = {
    ("vpt_shallow", "swin"): "does not apply to the timm_swin family: Swin's attention runs inside windows",
    ("vpt_deep", "swin"): "does not apply to the timm_swin family: Swin's attention runs inside windows",
}


# Hugging Face transformers backbones at tiny random configurations (width 32, 2 layers), run by the contract grid
# beside helpers' timm ones: (model class, config class, config fields). transformers is imported when one is built.
HF_BACKBONES: dict[str, tuple[str, str, dict]] = {
    # ViT without q, k, v biases: merges that add one need the config's qkv_bias=True to rebuild it
    "hf_vit": ("ViTForImageClassification", "ViTConfig", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16,
        patch_size=8, num_labels=5, qkv_bias=False)),
    # DINOv2: layer scale, one drop_path module for both branches, a head on class token + mean patch token
    "hf_dinov2": ("Dinov2ForImageClassification", "Dinov2Config", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=14,
        num_labels=5, layerscale_value=0.5)),
    # DINOv2 with 2 register tokens after the class token
    "hf_dinov2_reg": ("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=14,
        num_labels=5, layerscale_value=0.5, num_register_tokens=2)),
    # CLIP's image tower: pre-norm on the embeddings, a bias-less patch embedding, a position table
    "hf_clip": ("CLIPForImageClassification", "CLIPConfig", dict(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=8),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        num_labels=5)),
}


def make_hf_backbone(kind: str, seed: int = 0, **config) -> nn.Module:
    """The same weights for the same (kind, seed); `config` overrides fields (``merged_model_args``)."""
    import transformers

    model_class, config_class, fields = HF_BACKBONES[kind]
    vision = {**fields.get("vision_config", {}), **config} if "vision_config" in fields else None
    values = {**fields, "vision_config": vision} if vision is not None else {**fields, **config}
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(getattr(transformers, config_class)(**values)).eval()
