"""What a backbone family tells the methods: where each place of each block is.

Methods never hard-code module names; they ask for roles (``qkv``, ``fc1``, ``q`` ...) and get dotted
paths. Each family (timm ViT and Swin, Hugging Face ViT, CLIP and DINOv2) writes its knowledge in one file.

q, k and v are slices of one fused linear in timm's blocks and three linears of their own in Hugging Face's;
``BlockPlaces.linears`` names the whole layers behind a role either way, and ``targets.joint_linear`` gives a
method one layer computing several of them (joining separate ones), so methods never ask which it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

from ..errors import BackboneError

# Roles every block of a pre-norm transformer offers. q/k/v may be slices of a fused qkv linear.
LINEAR_ROLES = ("q", "k", "v", "qkv", "proj", "fc1", "fc2")
# The roles that are whole linear layers (methods that transform a layer's input or add a branch to a
# whole layer can only target these).
WHOLE_LINEAR_ROLES = ("qkv", "proj", "fc1", "fc2")


@dataclass(frozen=True)
class BlockPlaces:
    """Dotted paths (from the model root) of one transformer block's parts.

    Every family maps only blocks of the pre-norm layout the methods rely on:

        X1 = X + attn_branch(ls1(attn(norm1(X))))      X2 = X1 + mlp_branch(ls2(mlp(norm2(X1))))

    so ``norm2`` reads the residual stream X1, and ``attn_branch`` / ``mlp_branch`` are the last modules of
    each residual branch (timm's drop paths; identities at drop path 0) whose outputs join the residual.
    """

    index: int
    block: str
    norm1: str
    attn: str
    qkv: str  # the fused q, k, v linear; "" where q, k and v are separate linears (``qkv_parts`` names them)
    proj: str
    norm2: str
    mlp: str
    fc1: str
    fc2: str
    attn_branch: str = ""
    mlp_branch: str = ""
    # The block's token width (Swin's stages have different widths; a plain ViT's blocks all have one).
    width: int = 0
    # q, k, v -> (path of the linear that computes it, slice of that linear's output or None)
    qkv_parts: Mapping[str, tuple[str, slice | None]] = field(default_factory=dict)

    def linear(self, role: str) -> tuple[str, slice | None]:
        """The linear layer that computes `role`, and the slice of its output that is `role`."""
        if role in ("q", "k", "v"):
            return self.qkv_parts[role]
        if role not in LINEAR_ROLES:
            raise BackboneError(f"unknown linear role {role!r}; roles are {list(LINEAR_ROLES)}")
        if role == "qkv" and not self.qkv:
            raise BackboneError(
                f"{self.block} computes q, k and v in separate linears ({', '.join(self.linears('qkv'))}), not one "
                "qkv layer; use linears('qkv'), or targets.joint_linear to join them into one"
            )
        return getattr(self, role), None

    def linears(self, role: str) -> tuple[str, ...]:
        """The whole linear layers behind `role`: one for proj, fc1, fc2 and a fused qkv (also for q, k or v, a
        slice of it); q, k and v's own layers for ``qkv`` where they are separate."""
        if role == "qkv" and not self.qkv:
            return tuple(dict.fromkeys(self.qkv_parts[r][0] for r in ("q", "k", "v")))
        return (self.linear(role)[0],)


@dataclass(frozen=True)
class ModelPlaces:
    """Everything a method needs to know about where to attach in one model."""

    family: str
    blocks: tuple[BlockPlaces, ...]
    heads: tuple[str, ...]  # classifier module paths (a distilled DeiT has two)
    embed_dim: int  # the first block's width (every block's in a plain ViT; see ``widths``)
    num_prefix_tokens: int  # class token + register tokens, in front of the patch tokens
    patch_embed: str
    final_norms: tuple[str, ...]
    patch_proj: str = ""  # the patch projection (a Conv2d) inside the patch embedding
    patch_size: tuple[int, int] = (16, 16)
    in_chans: int = 3
    # Where a constant added to every patch token right after the patch projection can live instead: the
    # position-embedding parameter, (1, tokens, C) or a (tokens, C) table, and the index of its first patch
    # position (None: nowhere).
    patch_shift_target: tuple[str, int] | None = None
    # Numbers that define the backbone's shapes, recorded with saved adapters and checked on load.
    shapes: Mapping[str, object] = field(default_factory=dict)
    # Why prompt tokens (VPT, AdaptFormer's prompts) cannot be added to this family; empty: they can.
    no_prompts: str = ""
    # Parameters the classifying forward never reads (a mask token kept for masked-image pre-training): no
    # method trains them, or DistributedDataParallel would stop on a parameter without gradient.
    unused_parameters: tuple[str, ...] = ()

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def width(self, block: BlockPlaces) -> int:
        """The token width of `block` (the model's ``embed_dim`` when the family does not say)."""
        return block.width or self.embed_dim

    @property
    def widths(self) -> tuple[int, ...]:
        """The distinct block widths, in block order (one for a ViT, one per stage for Swin)."""
        return tuple(dict.fromkeys(self.width(b) for b in self.blocks))

    def shared_name(self, prefix: str, width: int) -> str:
        """Where a method keeps the tensors its blocks of `width` share: ``prefix`` when the model has one
        width (the name adapter files have always used), ``prefix_<width>`` when its stages differ."""
        return prefix if len(self.widths) == 1 else f"{prefix}_{width}"

    def describe(self) -> dict:
        """The shape-defining numbers, recorded with saved adapters and checked when they are loaded."""
        return {"family": self.family, "depth": self.depth, "embed_dim": self.embed_dim, **self.shapes}

    def in_head(self, path: str) -> bool:
        """Whether the module or tensor at `path` belongs to a classifier head."""
        return any(path == h or path.startswith(h + ".") for h in self.heads)

    def trainable_in_backbone(self, name: str) -> bool:
        """Whether a method may train the backbone tensor `name`: not a head's, and read by the forward."""
        return not self.in_head(name) and name not in self.unused_parameters

    def head_parameter_names(self, model: nn.Module) -> list[str]:
        """Names of the classifier heads' parameters (they always train)."""
        return [f"{h}.{n}" for h in self.heads for n, _ in model.get_submodule(h).named_parameters()]

    def num_classes(self, model: nn.Module) -> int | None:
        """The output width of the (first) classifier head; None for a model without a linear head."""
        for head in self.heads:
            linears = [m for m in model.get_submodule(head).modules() if isinstance(m, nn.Linear)]
            if linears:
                return linears[-1].out_features
        return None


def require_forward(module: nn.Module, reference: type, path: str, expected: str) -> None:
    """Refuse `module` (at `path`) unless its class's forward IS `reference`'s: a class that rewrites it computes
    something else than the layout a family's map was read from. `expected` says what that layout is."""
    if type(module).forward is not reference.forward:
        raise BackboneError(
            f"{path} is a {type(module).__module__}.{type(module).__name__}, whose forward is not {expected}"
        )


def require_linear(block: nn.Module, path: str, attr: str, expected: str) -> nn.Linear:
    """The ``nn.Linear`` at `attr` inside `block` (at `path`), or a BackboneError naming what is there instead."""
    try:
        module = block.get_submodule(attr)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Linear):
        found = type(module).__name__ if module is not None else "nothing"
        raise BackboneError(f"{path}.{attr} is {found}, expected Linear: {expected}")
    return module


def timm_grad_checkpointing(model: nn.Module, enable: bool) -> None:
    """timm's own switch: each block recomputes its activations in backward (non-reentrant checkpoints)."""
    model.set_grad_checkpointing(enable)


@dataclass(frozen=True)
class BackboneFamily:
    name: str
    matches: Callable[[nn.Module], bool]
    places: Callable[[nn.Module], ModelPlaces]
    # Constructor arguments a merged model needs to be rebuilt with the family's own factory (a merge that
    # gave bias-less qkv layers a bias needs timm's qkv_bias=True; for Hugging Face models, config fields).
    merged_model_args: Callable[[nn.Module], dict] = lambda model: {}
    # After a merge: make the merged model one the constructor arguments above can build, where the family's
    # factory sets biases for whole groups of layers (timm's proj_bias covers proj, fc1 and fc2 of every block).
    complete_merge: Callable[[nn.Module], None] = lambda model: None
    # Switches activation checkpointing on (True) or off, adapted or not; timm's own switch unless set.
    set_grad_checkpointing: Callable[[nn.Module, bool], None] = timm_grad_checkpointing


_FAMILIES: list[BackboneFamily] = []


def register_family(family: BackboneFamily) -> BackboneFamily:
    _FAMILIES.append(family)
    return family


def find_family(model: nn.Module) -> BackboneFamily:
    """The first registered family that recognises `model`."""
    for family in _FAMILIES:
        if family.matches(model):
            return family
    known = ", ".join(f.name for f in _FAMILIES)
    raise BackboneError(
        f"vitune does not know where to attach in a {type(model).__module__}.{type(model).__name__}; "
        f"supported backbone families: {known}"
    )


def find_places(model: nn.Module) -> ModelPlaces:
    """The place map of `model`, from the first family that recognises it."""
    return find_family(model).places(model)
