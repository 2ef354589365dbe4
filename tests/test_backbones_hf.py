"""Hugging Face transformers families: their place maps, refusals, joined q/k/v, exports, CLIP's zero-shot head.

The contract grid (test_contract.py) runs every method on a tiny model of each family; these tests check what is
particular to them. Tiny random configurations, no download.
"""

from __future__ import annotations

import string

import pytest
import torch
import transformers

import vitune
from vitune.backbones import find_places
from vitune.layers.joined_linear import JoinedSlice
from vitune.layers.lora import LoRALinear
from vitune.layers.repadapter import RepAdapterLinear

from cases import HF_BACKBONES, TINY_CONFIGS, make_hf_backbone
from helpers import make_backbone, perturb_trainable

TINY_VIT = HF_BACKBONES["hf_vit"][2]
TINY_VISION = HF_BACKBONES["hf_clip"][2]["vision_config"]


def images(model, n: int = 3) -> torch.Tensor:
    method = vitune.applied_method(model)
    size = (method.places if method is not None else find_places(model)).shapes["img_size"]
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "build,family,layers,heads,prefix",
    [
        (lambda: make_hf_backbone("hf_vit"), "hf_vit", "vit.layers", ("classifier",), 1),
        (lambda: transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)), "hf_vit", "layers", (), 1),
        (lambda: make_hf_backbone("hf_dinov2"), "hf_dinov2", "dinov2.encoder.layer", ("classifier",), 1),
        (lambda: make_hf_backbone("hf_dinov2_reg"), "hf_dinov2", "dinov2_with_registers.encoder.layer",
         ("classifier",), 3),
        (lambda: make_hf_backbone("hf_clip"), "hf_clip", "vision_model.encoder.layers", ("classifier",), 1),
        (lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY_VISION)), "hf_clip",
         "encoder.layers", (), 1),
        (lambda: transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**TINY_VISION)), "hf_clip",
         "vision_model.encoder.layers", (), 1),
    ],
)
def test_place_maps(build, family, layers, heads, prefix):
    places = find_places(build())
    assert places.family == family and places.depth == 2 and places.widths == (32,)
    assert places.heads == heads and places.num_prefix_tokens == prefix
    block = places.blocks[1]
    assert block.block == f"{layers}.1" and block.qkv == ""
    assert block.linears("qkv") == tuple(block.linear(r)[0] for r in ("q", "k", "v"))
    assert all(block.linear(r)[1] is None for r in ("q", "k", "v"))  # whole layers of their own
    with pytest.raises(vitune.BackboneError, match="separate linears"):
        block.linear("qkv")


def test_the_branch_ends_are_the_modules_each_branch_owns():
    """ViT's one dropout and DINOv2's one drop_path serve both branches: the map names what each branch owns."""
    vit, dino, clip = (find_places(make_hf_backbone(k)).blocks[0] for k in ("hf_vit", "hf_dinov2", "hf_clip"))
    assert (vit.attn_branch, vit.mlp_branch) == ("vit.layers.0.attention.o_proj", "vit.layers.0.mlp")
    assert (dino.attn_branch, dino.mlp_branch) == (
        "dinov2.encoder.layer.0.layer_scale1", "dinov2.encoder.layer.0.layer_scale2")
    assert (clip.attn_branch, clip.mlp_branch) == (
        "vision_model.encoder.layers.0.self_attn.out_proj", "vision_model.encoder.layers.0.mlp")


def test_tensors_the_forward_never_reads_are_never_trained():
    """DINOv2's mask token and CLIPForImageClassification's pooled-token norm (its classifier reads the patch
    tokens) stay frozen even under full fine-tuning: DDP would stop on parameters without gradient."""
    dino = vitune.apply(make_hf_backbone("hf_dinov2"), "full")
    assert find_places(make_hf_backbone("hf_dinov2")).unused_parameters == ("dinov2.embeddings.mask_token",)
    assert not dino.dinov2.embeddings.mask_token.requires_grad and dino.dinov2.layernorm.weight.requires_grad
    clip = vitune.apply(make_hf_backbone("hf_clip"), "ln_tune")
    assert not clip.vision_model.post_layernorm.weight.requires_grad
    assert clip.vision_model.pre_layrnorm.weight.requires_grad


def test_a_layer_of_another_layout_is_refused_by_name():
    config = transformers.Dinov2Config(**{**HF_BACKBONES["hf_dinov2"][2], "use_swiglu_ffn": True})
    model = transformers.Dinov2ForImageClassification(config)
    before = list(model.state_dict())
    with pytest.raises(vitune.BackboneError, match=r"encoder\.layer\.0\.mlp is a .*Dinov2SwiGLUFFN, whose forward "
                                                   r"is not transformers' Dinov2MLP\.forward"):
        vitune.apply(model, "repadapter")
    assert vitune.applied_method(model) is None and list(model.state_dict()) == before

    class RewrittenLayer(transformers.models.vit.modeling_vit.ViTLayer):
        def forward(self, hidden_states, *args, **kwargs):  # post-norm, say
            return super().forward(hidden_states, *args, **kwargs)

    vit = make_hf_backbone("hf_vit")
    vit.vit.layers[1].__class__ = RewrittenLayer
    with pytest.raises(vitune.BackboneError, match=r"vit\.layers\.1 is a .*RewrittenLayer, whose forward is not "):
        vitune.apply(vit, "lora")


@pytest.mark.parametrize("method", ["repadapter", "arc", "consolidator", "kadaptation", "ssf", "lora"])
def test_separate_q_k_v_cost_what_a_fused_qkv_costs(method):
    """Adapters on the input of qkv are one adapter before the three linears, output methods split across them:
    the same parameter count as on a timm ViT of the same shapes (a fused qkv)."""
    timm_vit = make_backbone("vit", embed_dim=32, mlp_ratio=2.0, num_heads=2)
    config = TINY_CONFIGS.get(method, {})
    fused = vitune.count_parameters(vitune.apply(timm_vit, method, **config))["method"]
    hf = vitune.count_parameters(vitune.apply(make_hf_backbone("hf_vit"), method, **config))["method"]
    assert hf == fused > 0


def test_one_adapter_before_q_k_v_runs_once_and_merges_into_each():
    model = vitune.apply(make_hf_backbone("hf_vit"), "repadapter_attn")
    attention = model.vit.layers[0].attention
    assert [type(attention.get_submodule(n)) for n in ("q_proj", "k_proj", "v_proj")] == [JoinedSlice] * 3
    assert isinstance(attention.q_proj.joined, RepAdapterLinear)  # the only adapter of the block
    adapters = [n for n, _ in model.named_parameters() if n.endswith("weight_A")]
    assert adapters == [f"vit.layers.{i}.attention.q_proj.joined.repadapter.weight_A" for i in (0, 1)]
    calls = []
    attention.q_proj.joined.repadapter.register_forward_hook(lambda *_: calls.append(1))
    perturb_trainable(model)
    model.train()  # dropout on: one mask for q, k and v, as before a fused qkv
    model(images(model))
    assert len(calls) == 1

    model.eval()
    x = images(model)
    with torch.no_grad():
        before = model(x).logits
    vitune.merge(model)
    assert all(type(attention.get_submodule(n)) is torch.nn.Linear for n in ("q_proj", "k_proj", "v_proj"))
    assert attention.q_proj.bias is not None  # W c: the merged adapter's shift, on a model built without biases
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, before, rtol=0, atol=1e-5)


def test_slices_called_out_of_order_still_compute_each_projection():
    """The joined layer runs once for q, k, v called in turn on one input; another order only costs a rerun."""
    model = vitune.apply(make_hf_backbone("hf_vit"), "lora", targets=["qkv"])
    perturb_trainable(model)
    attention = model.vit.layers[0].attention
    x = torch.randn(2, 5, 32)
    joined = attention.q_proj.joined
    with torch.no_grad():
        full = joined(x)
        v, k, q = attention.v_proj(x), attention.k_proj(x), attention.q_proj(x)
        assert attention.q_proj._pending is None  # nothing kept once every slice was served
        twice = [attention.q_proj(x), attention.q_proj(x)]  # the second call runs the joined layer again
    torch.testing.assert_close(torch.cat([q, k, v], dim=-1), full, rtol=0, atol=0)
    torch.testing.assert_close(twice[0], full[..., :32], rtol=0, atol=0)
    torch.testing.assert_close(twice[1], full[..., :32], rtol=0, atol=0)


def test_lora_on_q_and_v_adapts_their_own_linears():
    model = vitune.apply(make_hf_backbone("hf_clip"), "lora")
    attention = model.vision_model.encoder.layers[0].self_attn
    assert isinstance(attention.q_proj, LoRALinear) and isinstance(attention.v_proj, LoRALinear)
    assert attention.q_proj.parts is None and type(attention.k_proj) is torch.nn.Linear


def test_targets_naming_qkv_and_a_part_of_it_are_refused():
    with pytest.raises(vitune.ConfigError, match="name 'q' and the layer holding it"):
        vitune.apply(make_hf_backbone("hf_vit"), "lora", targets=["qkv", "q"])


def test_a_merged_model_saves_and_loads_with_transformers_alone(tmp_path):
    """The Python route out of vitune for a Hugging Face model: merge, take merged_model_args into the config,
    save_pretrained; from_pretrained then rebuilds it strictly, without vitune."""
    model = vitune.apply(make_hf_backbone("hf_vit"), "kadaptation", **TINY_CONFIGS["kadaptation"])
    perturb_trainable(model)
    model.eval()
    x = images(model)
    with torch.no_grad():
        before = model(x).logits
    vitune.merge(model)
    model.config.update(vitune.merged_model_args(model))
    assert model.config.qkv_bias is True
    model.save_pretrained(tmp_path)
    loaded, info = transformers.ViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x).logits, before, rtol=0, atol=1e-5)


def test_adapter_files_round_trip_on_a_bare_encoder(tmp_path):
    """A model without a classifier (CLIPVisionModelWithProjection): the method trains alone, its file reloads."""
    def build():
        torch.manual_seed(0)
        config = transformers.CLIPVisionConfig(**TINY_VISION, projection_dim=16)
        return transformers.CLIPVisionModelWithProjection(config)

    model = vitune.apply(build(), "repadapter")
    assert vitune.count_parameters(model)["head"] == 0
    perturb_trainable(model)
    model.eval()
    x = images(model)
    vitune.save_adapter(model, tmp_path)
    loaded = vitune.load_adapter(build(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).image_embeds, model(pixel_values=x).image_embeds)
    assert vitune.read_adapter_config(tmp_path)["backbone"]["architecture"] == "clip_vision_model"


# CLIP's zero-shot head, on a tiny random CLIPModel and a CLIPTokenizer over a letters-only vocabulary.

def tiny_tokenizer() -> transformers.CLIPTokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in [*string.ascii_lowercase, "."]:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)  # the last letter of a word
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip(vocab_size: int) -> transformers.CLIPModel:
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=vocab_size, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    config = transformers.CLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16,
                                     logit_scale_init_value=3.0)
    return transformers.CLIPModel(config).eval()


CLASSES = ["cat", "dog", "airplane"]


def test_zero_shot_head_gives_clips_own_zero_shot_logits():
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(len(tokenizer))
    head = vitune.zero_shot_head(clip, tokenizer, CLASSES, templates=["a photo of a {}."])
    x = images(clip.vision_model)
    prompts = tokenizer([f"a photo of a {c}." for c in CLASSES], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = clip(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], pixel_values=x)
        classifier = vitune.CLIPZeroShotClassifier(clip, head).eval()
        logits = classifier(x).logits
    torch.testing.assert_close(logits, expected.logits_per_image, rtol=0, atol=1e-5)
    # The scale is CLIP's: each row is exp(logit_scale) long, and a normalised image scores within it.
    torch.testing.assert_close(head.weight.norm(dim=1), torch.full((3,), float(torch.e ** 3.0)), rtol=1e-6, atol=0)
    assert torch.equal(head.bias, torch.zeros(3))


def test_zero_shot_head_ensembles_templates_as_clip_does():
    """Per class: normalise each template's text embedding, average, normalise again, times exp(logit_scale)."""
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(len(tokenizer))
    templates = ["a photo of a {}.", "a drawing of the {}.", "{}"]
    head = vitune.zero_shot_head(clip, tokenizer, CLASSES, templates=templates)
    for c, name in enumerate(CLASSES):
        tokens = tokenizer([t.format(name) for t in templates], padding=True, return_tensors="pt")
        with torch.no_grad():
            text = clip.get_text_features(**tokens).pooler_output
        mean = torch.nn.functional.normalize(text, dim=-1).mean(0)
        torch.testing.assert_close(head.weight[c], mean / mean.norm() * clip.logit_scale.exp(), rtol=0, atol=1e-5)


def test_zero_shot_classifier_trains_and_merges_like_any_clip_model():
    tokenizer = tiny_tokenizer()
    clip = tiny_clip(len(tokenizer))
    model = vitune.CLIPZeroShotClassifier(clip, vitune.zero_shot_head(clip, tokenizer, CLASSES))
    x = images(model)
    places = find_places(model)
    assert places.family == "hf_clip" and places.heads == ("head",)
    vitune.apply(model, "kadaptation", **TINY_CONFIGS["kadaptation"])
    assert model.head.weight.requires_grad and not model.visual_projection.weight.requires_grad
    perturb_trainable(model)
    model.eval()
    with torch.no_grad():
        before = model(x).logits
        vitune.merge(model)
        torch.testing.assert_close(model(x).logits, before, rtol=0, atol=1e-4)


def test_zero_shot_head_refuses_templates_without_a_place_for_the_name():
    tokenizer = tiny_tokenizer()
    with pytest.raises(vitune.ConfigError, match="template"):
        vitune.zero_shot_head(tiny_clip(len(tokenizer)), tokenizer, CLASSES, templates=["a photo"])


def timm_and_hf_vit_with_the_same_weights():
    """A timm ViT and a transformers ViT holding the same tensors (timm's fused qkv = HF's q, k, v stacked)."""
    timm_vit = make_backbone("vit", img_size=16, embed_dim=32, mlp_ratio=2.0, num_heads=2)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(
        **{**TINY_VIT, "qkv_bias": True, "layer_norm_eps": 1e-6, "hidden_act": "gelu"})).eval()
    state = timm_vit.state_dict()
    mapped = {
        "vit.embeddings.cls_token": state["cls_token"], "vit.embeddings.position_embeddings": state["pos_embed"],
        "vit.layernorm.weight": state["norm.weight"], "vit.layernorm.bias": state["norm.bias"],
        "classifier.weight": state["head.weight"], "classifier.bias": state["head.bias"],
    }
    for leaf in ("weight", "bias"):
        mapped[f"vit.embeddings.patch_embeddings.projection.{leaf}"] = state[f"patch_embed.proj.{leaf}"]
        for i in range(2):
            for ours, theirs in [("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
                                 ("attention.o_proj", "attn.proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]:
                mapped[f"vit.layers.{i}.{ours}.{leaf}"] = state[f"blocks.{i}.{theirs}.{leaf}"]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), state[f"blocks.{i}.attn.qkv.{leaf}"].chunk(3)):
                mapped[f"vit.layers.{i}.attention.{name}.{leaf}"] = part
    hf.load_state_dict(mapped, strict=True)
    return timm_vit, hf


def hf_name(timm_name: str) -> str:
    """Where an adapter tensor of the timm ViT sits in the transformers ViT."""
    name = timm_name.replace(".attn.qkv.", ".attention.q_proj.joined.")
    for theirs, ours in (("blocks.", "vit.layers."), ("head.", "classifier.")):
        if name.startswith(theirs):
            name = ours + name[len(theirs):]
    return name


@pytest.mark.parametrize(
    "method,config", [("repadapter", {}), ("kadaptation", {"n": 8}), ("lora", {"targets": ["qkv"]}), ("arc", {})]
)
def test_an_adapter_computes_the_same_on_separate_q_k_v_as_on_a_fused_qkv(method, config):
    """The same weights and adapter tensors give the same outputs in timm's and transformers' ViT, in training too:
    one adapter before the joined q, k, v draws one dropout mask, as before a fused qkv."""
    timm_vit, hf = timm_and_hf_vit_with_the_same_weights()
    x = images(hf)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, timm_vit(x), rtol=0, atol=1e-5)  # the stand-in holds
    vitune.apply(timm_vit, method, **config)
    vitune.apply(hf, method, **config)
    perturb_trainable(timm_vit)
    trained = {n: t for n, t in timm_vit.state_dict().items() if n in dict(timm_vit.named_parameters())
               and timm_vit.get_parameter(n).requires_grad}
    hf.load_state_dict({hf_name(n): t for n, t in trained.items()}, strict=False)
    assert {hf_name(n) for n in trained} == {n for n, p in hf.named_parameters() if p.requires_grad}
    for mode in ("eval", "train"):
        getattr(timm_vit, mode)(), getattr(hf, mode)()
        torch.manual_seed(3)
        expected = timm_vit(x)
        torch.manual_seed(3)
        torch.testing.assert_close(hf(x).logits, expected, rtol=0, atol=1e-5)


def test_another_transformers_layout_is_named():
    """A model whose modules are not where transformers 5 puts them (an older version's vit.encoder.layer)."""
    model = make_hf_backbone("hf_vit")
    model.vit.encoder = torch.nn.Module()
    model.vit.encoder.layer = model.vit.layers
    del model.vit.layers
    with pytest.raises(vitune.BackboneError, match=r"lacks a module vitune's hf_vit map expects .*vit\.layers\.N"):
        vitune.apply(model, "lora")
