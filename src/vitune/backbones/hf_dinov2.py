"""Hugging Face ``transformers`` DINOv2: ``Dinov2Model`` / ``Dinov2ForImageClassification`` and the register
variant ``Dinov2WithRegistersModel`` / ``Dinov2WithRegistersForImageClassification`` (``facebook/dinov2-*``).

Encoder layers ``dinov2.encoder.layer.{i}`` (``dinov2_with_registers.``, or none on a bare model): ``norm1``,
``attention`` with separate ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj``, ``layer_scale1``, ``norm2``,
``mlp`` (fc1, fc2), ``layer_scale2``. One ``drop_path`` module follows both layer scales, so the branch ends
are the layer scales (``hf_blocks.py``). Register tokens sit after the class token and are prefix tokens like
it. The classifier reads the class token and the mean of the patch tokens (twice the width). DINOv2's SwiGLU
MLP (``use_swiglu_ffn``, the giant model) has no fc1/fc2 and is refused.
"""

from __future__ import annotations

from torch import nn

from .base import BackboneFamily, ModelPlaces, register_family
from .hf_blocks import HFLayerLayout, hf_grad_checkpointing, hf_model_places, is_transformers_model, qkv_bias_args

PLAIN = ("Dinov2Model", "Dinov2ForImageClassification")
REGISTERS = ("Dinov2WithRegistersModel", "Dinov2WithRegistersForImageClassification")


def _layout(registers: bool) -> HFLayerLayout:
    if registers:
        from transformers.models.dinov2_with_registers import modeling_dinov2_with_registers as m

        classes = (m.Dinov2WithRegistersLayer, m.Dinov2WithRegistersAttention, m.Dinov2WithRegistersMLP)
    else:
        from transformers.models.dinov2 import modeling_dinov2 as m

        classes = (m.Dinov2Layer, m.Dinov2Attention, m.Dinov2MLP)
    return HFLayerLayout(
        "hf_dinov2", *classes, norm1="norm1", attn="attention", q="attention.q_proj", k="attention.k_proj",
        v="attention.v_proj", proj="attention.o_proj", norm2="norm2", mlp_path="mlp", fc1="mlp.fc1", fc2="mlp.fc2",
        attn_branch="layer_scale1", mlp_branch="layer_scale2",
    )


def _places(model: nn.Module) -> ModelPlaces:
    registers = is_transformers_model(model, REGISTERS)
    if is_transformers_model(model, ("Dinov2Model", "Dinov2WithRegistersModel")):
        encoder = ""
    else:
        encoder = "dinov2_with_registers" if registers else "dinov2"
    at = f"{encoder}." if encoder else ""
    return hf_model_places(
        model, _layout(registers), encoder=encoder, layers=f"{at}encoder.layer", embeddings=f"{at}embeddings",
        patch_proj=f"{at}embeddings.patch_embeddings.projection", final_norm=f"{at}layernorm",
        position_embedding=f"{at}embeddings.position_embeddings", heads=("classifier",),
        num_prefix_tokens=1 + (model.config.num_register_tokens if registers else 0),
    )


HF_DINOV2 = register_family(
    BackboneFamily(
        name="hf_dinov2", matches=lambda model: is_transformers_model(model, PLAIN + REGISTERS), places=_places,
        merged_model_args=qkv_bias_args, set_grad_checkpointing=hf_grad_checkpointing,
    )
)
