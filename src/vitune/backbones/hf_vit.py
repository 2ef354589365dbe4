"""Hugging Face ``transformers`` ViT: ``ViTModel`` and ``ViTForImageClassification`` (Google's ViT weights as
published on the Hub, e.g. ``google/vit-base-patch16-224-in21k``, loaded with ``from_pretrained``).

Encoder layers ``vit.layers.{i}`` (``layers.{i}`` on a bare ViTModel): ``layernorm_before``, ``attention`` with
separate ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj``, ``layernorm_after``, ``mlp`` (fc1, fc2). One
``dropout`` module follows both branches, so the branch ends are ``attention.o_proj`` and ``mlp``
(``hf_blocks.py``). The classifier reads the class token after the final ``layernorm``; a ViTModel's pooler
(dense + tanh) is part of the pretrained backbone, not a head. The merged model rebuilds from its config with
``qkv_bias=True`` when a merge gave bias-less q, k, v a bias (``merged_model_args``).
"""

from __future__ import annotations

from torch import nn

from .base import BackboneFamily, ModelPlaces, register_family
from .hf_blocks import HFLayerLayout, hf_grad_checkpointing, hf_model_places, is_transformers_model, qkv_bias_args

CLASSES = ("ViTModel", "ViTForImageClassification")


def _layout() -> HFLayerLayout:
    from transformers.models.vit import modeling_vit as vit

    return HFLayerLayout(
        family="hf_vit", layer=vit.ViTLayer, attention=vit.ViTAttention, mlp=vit.ViTMLP,
        norm1="layernorm_before", attn="attention", q="attention.q_proj", k="attention.k_proj",
        v="attention.v_proj", proj="attention.o_proj", norm2="layernorm_after", mlp_path="mlp", fc1="mlp.fc1",
        fc2="mlp.fc2", attn_branch="attention.o_proj", mlp_branch="mlp",
    )


def _places(model: nn.Module) -> ModelPlaces:
    encoder = "" if is_transformers_model(model, ("ViTModel",)) else "vit"
    at = f"{encoder}." if encoder else ""
    return hf_model_places(
        model, _layout(), encoder=encoder, layers=f"{at}layers", embeddings=f"{at}embeddings",
        patch_proj=f"{at}embeddings.patch_embeddings.projection", final_norm=f"{at}layernorm",
        position_embedding=f"{at}embeddings.position_embeddings", heads=("classifier",), num_prefix_tokens=1,
    )


HF_VIT = register_family(
    BackboneFamily(
        name="hf_vit", matches=lambda model: is_transformers_model(model, CLASSES), places=_places,
        merged_model_args=qkv_bias_args, set_grad_checkpointing=hf_grad_checkpointing,
    )
)
