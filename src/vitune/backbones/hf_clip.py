"""Hugging Face ``transformers`` CLIP image towers: ``CLIPVisionModel`` (also the ``vision_model`` of a
``CLIPModel``), ``CLIPVisionModelWithProjection`` and ``CLIPForImageClassification`` (``openai/clip-vit-*``).

Encoder layers ``vision_model.encoder.layers.{i}`` (``encoder.layers.{i}`` on a bare CLIPVisionModel):
``layer_norm1``, ``self_attn`` with separate ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``,
``layer_norm2``, ``mlp`` (fc1, fc2); nothing follows the branches, so their ends are ``self_attn.out_proj``
and ``mlp`` (``hf_blocks.py``). The patch embedding has no bias and a position table (``nn.Embedding``)
follows it, where SSF's patch shift goes when merging. ``pre_layrnorm`` is the pre-norm on the embeddings;
``post_layernorm`` normalises the pooled class token (the final norm). The visual projection is pretrained
backbone, not a head; CLIPForImageClassification's ``classifier`` (on the mean patch token) is, and so is
the ``head`` of vitune's :class:`CLIPZeroShotClassifier` (the normalised projected embedding), which
``vitune.zero_shot_head`` starts as CLIP's zero-shot classifier.
"""

from __future__ import annotations

from torch import nn

from .base import BackboneFamily, ModelPlaces, register_family
from .hf_blocks import HFLayerLayout, hf_grad_checkpointing, hf_model_places, is_transformers_model
from .hf_clip_classifier import CLIPZeroShotClassifier

CLASSES = ("CLIPVisionModel", "CLIPVisionModelWithProjection", "CLIPForImageClassification")


def _layout() -> HFLayerLayout:
    from transformers.models.clip import modeling_clip as clip

    return HFLayerLayout(
        family="hf_clip", layer=clip.CLIPEncoderLayer, attention=clip.CLIPAttention, mlp=clip.CLIPMLP,
        norm1="layer_norm1", attn="self_attn", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
        proj="self_attn.out_proj", norm2="layer_norm2", mlp_path="mlp", fc1="mlp.fc1", fc2="mlp.fc2",
        attn_branch="self_attn.out_proj", mlp_branch="mlp",
    )


def _places(model: nn.Module) -> ModelPlaces:
    encoder = "" if is_transformers_model(model, ("CLIPVisionModel",)) else "vision_model"
    at = f"{encoder}." if encoder else ""
    # CLIPForImageClassification's classifier reads the mean patch token of the encoder's output: the final norm
    # of the pooled class token is never used.
    classifier = is_transformers_model(model, ("CLIPForImageClassification",))
    return hf_model_places(
        model, _layout(), encoder=encoder, layers=f"{at}encoder.layers", embeddings=f"{at}embeddings",
        patch_proj=f"{at}embeddings.patch_embedding", final_norm="" if classifier else f"{at}post_layernorm",
        position_embedding=f"{at}embeddings.position_embedding.weight", heads=("classifier", "head"),
        num_prefix_tokens=1,
        unused_modules=(f"{at}post_layernorm",) if classifier else (),
    )


HF_CLIP = register_family(
    BackboneFamily(
        name="hf_clip",
        matches=lambda model: isinstance(model, CLIPZeroShotClassifier) or is_transformers_model(model, CLASSES),
        places=_places,
        set_grad_checkpointing=hf_grad_checkpointing,
    )
)
