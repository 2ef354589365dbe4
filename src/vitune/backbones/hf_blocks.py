"""What the Hugging Face ``transformers`` encoder layers of ViT, DINOv2 and CLIP share, and how they differ.

Each is a pre-norm block with separate q, k and v linears that all read the first norm's output:

    X1 = X + attn_end(attention(norm1(X)))      X2 = X1 + mlp_end(mlp(norm2(X1)))

but the modules at the ends of the residual branches differ: ViT applies one ``dropout`` module to both
branches, DINOv2 one ``drop_path`` module after its layer scales, CLIP nothing. A module used by both branches
cannot stand for one of them, so a family names the last module of each branch that belongs to it alone:
ViT's and CLIP's attention output projection and MLP, DINOv2's layer scales. Adapters added there join the
residual stream through the shared dropout or drop path, unlike timm's, which sit after them (the same at
inference, and in training whenever that rate is 0, as in the released configs).

A layer is accepted only when its class's forward IS the reference class's forward, and so are its attention's
and MLP's (the map relies on q, k, v reading the attention's input and on the MLP being fc1, act, fc2): a class
that rewrites them (DINOv2's SwiGLU MLP, another transformers version's layout) is refused by name, instead of
being adapted in places that no longer mean what the methods assume.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import BackboneError
from .base import BlockPlaces, ModelPlaces, find_places, require_forward, require_linear


@dataclass(frozen=True)
class HFLayerLayout:
    """Where a family's encoder layer keeps its parts (paths relative to the layer) and which classes' forwards
    those places were read from."""

    family: str
    layer: type
    attention: type
    mlp: type
    norm1: str
    attn: str
    q: str
    k: str
    v: str
    proj: str
    norm2: str
    mlp_path: str
    fc1: str
    fc2: str
    attn_branch: str
    mlp_branch: str


def _require_forward(module: nn.Module, reference: type, path: str, what: str, family: str) -> None:
    require_forward(module, reference, path, (
        f"transformers' {reference.__name__}.forward: vitune's {family} map was read from that {what} and would "
        "place adapters where they no longer mean what the methods assume"
    ))


def hf_block_places(layer: nn.Module, path: str, index: int, layout: HFLayerLayout) -> BlockPlaces:
    """The places of one Hugging Face encoder layer at `path`, checked against the layout's classes."""
    family = layout.family
    _require_forward(layer, layout.layer, path, "layer", family)
    _require_forward(layer.get_submodule(layout.attn), layout.attention, f"{path}.{layout.attn}", "attention", family)
    _require_forward(layer.get_submodule(layout.mlp_path), layout.mlp, f"{path}.{layout.mlp_path}", "MLP", family)
    expected = f"vitune's {family} map needs transformers' layer with its linears"
    q = require_linear(layer, path, layout.q, expected)
    for attr in (layout.k, layout.v, layout.proj, layout.fc1, layout.fc2):
        require_linear(layer, path, attr, expected)

    def at(attr: str) -> str:
        return f"{path}.{attr}"

    return BlockPlaces(
        index=index,
        block=path,
        norm1=at(layout.norm1),
        attn=at(layout.attn),
        qkv="",
        proj=at(layout.proj),
        norm2=at(layout.norm2),
        mlp=at(layout.mlp_path),
        fc1=at(layout.fc1),
        fc2=at(layout.fc2),
        attn_branch=at(layout.attn_branch),
        mlp_branch=at(layout.mlp_branch),
        width=q.in_features,
        qkv_parts={role: (at(getattr(layout, role)), None) for role in ("q", "k", "v")},
    )


def hf_grad_checkpointing(model: nn.Module, enable: bool) -> None:
    """transformers' activation checkpointing on the outermost ``PreTrainedModel`` in `model`: each layer
    recomputes its activations in backward, through non-reentrant checkpoints as timm's."""
    from transformers import PreTrainedModel

    owner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)  # outermost comes first
    if owner is None or not owner.supports_gradient_checkpointing:
        what = "holds no transformers PreTrainedModel" if owner is None else "does not support it in transformers"
        raise BackboneError(f"activation checkpointing: {type(model).__name__} {what}")
    kwargs = {"use_reentrant": False}
    if not enable:
        getattr(owner, "activation_checkpointing_disable", owner.gradient_checkpointing_disable)()
    elif hasattr(owner, "activation_checkpointing_enable"):  # the newer name; the older one warns
        owner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        owner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def is_transformers_model(model: nn.Module, class_names: tuple[str, ...]) -> bool:
    """Whether `model` is one of transformers' classes named `class_names` (or a subclass), without importing
    transformers for models that come from elsewhere (it takes seconds to import)."""
    return any(
        cls.__module__.startswith("transformers.") and cls.__name__ in class_names for cls in type(model).__mro__
    )


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value), int(value)]


def hf_model_places(
    model: nn.Module,
    layout: HFLayerLayout,
    *,
    encoder: str,
    layers: str,
    embeddings: str,
    patch_proj: str,
    final_norm: str,
    position_embedding: str,
    heads: tuple[str, ...],
    num_prefix_tokens: int,
    unused_modules: tuple[str, ...] = (),
) -> ModelPlaces:
    """The place map of a Hugging Face vision model. Paths are from the model root: `encoder` is the
    transformers model holding the embeddings and its config (the model itself or its ``vit``, ``dinov2``,
    ``vision_model`` ...), `layers` the ModuleList of encoder layers, `embeddings` the module making the tokens,
    `position_embedding` the parameter holding the class position then the patch positions, `unused_modules`
    modules whose output the model's forward drops (``final_norm`` empty when it is one of them)."""
    try:
        inner = model.get_submodule(encoder) if encoder else model
        blocks = tuple(
            hf_block_places(layer, f"{layers}.{i}", i, layout) for i, layer in enumerate(model.get_submodule(layers))
        )
    except AttributeError as e:  # another transformers version's module names
        import transformers

        raise BackboneError(
            f"{type(model).__name__} lacks a module vitune's {layout.family} map expects ({e}): the map is read from "
            f"transformers 5's layout ({layers}.N), and this is transformers {transformers.__version__}"
        ) from None
    config = inner.config
    if not blocks:
        raise BackboneError(f"this {type(model).__name__} has no encoder layers to adapt")
    proj = model.get_submodule(patch_proj)
    unused = [f"{m}.{n}" for m in unused_modules for n, _ in model.get_submodule(m).named_parameters()]
    # The mask token of masked-image pre-training (DINOv2, a ViT built with use_mask_token) is never read.
    if isinstance(getattr(model.get_submodule(embeddings), "mask_token", None), nn.Parameter):
        unused.append(f"{embeddings}.mask_token")
    shapes = {
        "num_heads": config.num_attention_heads,
        "mlp_hidden": model.get_submodule(blocks[0].fc1).out_features,
        "num_prefix_tokens": num_prefix_tokens,
        "patch_size": _pair(config.patch_size),
        "img_size": _pair(config.image_size),
    }
    return ModelPlaces(
        family=layout.family,
        blocks=blocks,
        heads=tuple(h for h in heads if isinstance(getattr(model, h, None), nn.Linear)),
        embed_dim=blocks[0].width,
        num_prefix_tokens=num_prefix_tokens,
        patch_embed=patch_proj.rpartition(".")[0],
        final_norms=(final_norm,) if final_norm else (),
        patch_proj=patch_proj,
        patch_size=tuple(shapes["patch_size"]),
        in_chans=proj.in_channels,
        # Registers (DINOv2) are inserted after the position embedding is added: patch positions start at 1.
        patch_shift_target=(position_embedding, 1),
        shapes=shapes,
        unused_parameters=tuple(unused),
    )


def qkv_bias_args(model: nn.Module) -> dict:
    """The config field ``qkv_bias=True`` when a merge gave the q, k and v linears of a model built without
    them a bias (ViT and DINOv2; CLIP's always have one)."""
    places = find_places(model)
    qkvs = [model.get_submodule(path) for block in places.blocks for path in block.linears("qkv")]
    config = model.config
    if getattr(config, "qkv_bias", True) is False and qkvs and all(q.bias is not None for q in qkvs):
        return {"qkv_bias": True}
    return {}
