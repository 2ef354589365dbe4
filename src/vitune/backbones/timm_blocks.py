"""What timm's pre-norm blocks share, ViT's ``Block`` and Swin's ``SwinTransformerBlock`` alike: the names of
their parts (norm1, attn.qkv fused, attn.proj, norm2, mlp.fc1, mlp.fc2, drop_path1/2) and the layout

    X1 = X + drop_path1(ls1(attn(norm1(X))))      X2 = X1 + drop_path2(ls2(mlp(norm2(X1))))

A block is accepted only when its class's forward IS the reference class's forward: a subclass that rewrites
it (timm's post-norm ``ResPostBlock``, the parallel blocks) computes its branches differently, and methods that
place adapters relative to the residual stream would silently compute something else on it.
"""

from __future__ import annotations

from torch import nn

from ..errors import BackboneError
from .base import BlockPlaces, require_forward, require_linear


def timm_block_places(block: nn.Module, path: str, index: int, reference: type, family: str) -> BlockPlaces:
    """The places of one timm pre-norm block at `path`, checked against the `reference` block class."""
    require_forward(block, reference, path, (
        f"timm's pre-norm {reference.__name__} (X1 = X + drop_path1(ls1(attn(norm1(X)))), X2 = X1 + drop_path2(ls2("
        "mlp(norm2(X1))))); vitune's methods place adapters relative to that layout and would silently compute "
        "something else on post-norm (ResPostBlock) or parallel blocks"
    ))
    expected = (f"vitune's {family} map needs blocks built from timm's parts (norm1, attn.qkv, attn.proj, norm2, "
                "mlp.fc1, mlp.fc2)")
    qkv = require_linear(block, path, "attn.qkv", expected)
    for attr in ("attn.proj", "mlp.fc1", "mlp.fc2"):
        require_linear(block, path, attr, expected)
    if qkv.out_features % 3:
        raise BackboneError(f"{path}.attn.qkv has {qkv.out_features} outputs, not a fused q,k,v")
    part = qkv.out_features // 3  # Swin's head_dim option can make q, k, v wider than the tokens
    return BlockPlaces(
        index=index,
        block=path,
        norm1=f"{path}.norm1",
        attn=f"{path}.attn",
        qkv=f"{path}.attn.qkv",
        proj=f"{path}.attn.proj",
        norm2=f"{path}.norm2",
        mlp=f"{path}.mlp",
        fc1=f"{path}.mlp.fc1",
        fc2=f"{path}.mlp.fc2",
        attn_branch=f"{path}.drop_path1",
        mlp_branch=f"{path}.drop_path2",
        width=qkv.in_features,
        qkv_parts={
            role: (f"{path}.attn.qkv", slice(k * part, (k + 1) * part)) for k, role in enumerate(("q", "k", "v"))
        },
    )
