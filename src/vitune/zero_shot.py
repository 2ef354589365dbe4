"""CLIP's zero-shot classifier as a linear head: where KAdaptation and PEViT start their CLIP classifier.

CLIP classifies zero-shot by the cosine similarity of an image's embedding with the text embedding of each class
name put in a prompt ("a photo of a {}."), times its learnt logit scale. That is a linear map of the normalised
image embedding, so it can be a linear head that training then fine-tunes, starting from CLIP's own predictions.
With several prompt templates, each class's text embeddings are normalised, averaged and normalised again
(CLIP's prompt ensembling).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _text_embeddings(clip_model: nn.Module, tokenizer: Callable, prompts: list[str]) -> torch.Tensor:
    """CLIP's projected text embedding of each prompt (not normalised)."""
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    device = clip_model.text_projection.weight.device
    tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
    features = clip_model.get_text_features(**tokens)
    # transformers 5 returns the text model's output with the projected embedding as its pooler_output.
    return features if isinstance(features, torch.Tensor) else features.pooler_output


@torch.no_grad()
def zero_shot_head(
    clip_model: nn.Module,
    tokenizer: Callable,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> nn.Linear:
    """A linear head whose logits are CLIP's zero-shot logits.

    The head reads the L2-normalised image embedding after CLIP's visual projection:
    ``e = F.normalize(clip_model.get_image_features(pixel_values).pooler_output, dim=-1)`` (a
    ``CLIPVisionModelWithProjection``'s ``image_embeds``, normalised; :class:`CLIPZeroShotClassifier` computes it).
    Row c of its weight is ``exp(logit_scale) * t_c``, with ``t_c`` the normalised mean over `templates` of the
    normalised text embeddings of ``template.format(class_names[c])``; its bias is zero. With one template,
    ``head(e)`` equals ``clip_model(input_ids=..., pixel_values=...).logits_per_image`` for those prompts.

    Args:
        clip_model: a transformers ``CLIPModel`` (text tower, text projection, logit scale).
        tokenizer: called as ``tokenizer(prompts, padding=True, return_tensors="pt")`` and returning
            ``input_ids`` (and ``attention_mask``): the model's ``CLIPTokenizer``.
        class_names: one name per class, in label order.
        templates: prompts with one ``{}`` where the class name goes.
    """
    if not class_names:
        raise ConfigError("zero_shot_head: no class names given")
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ConfigError(f"zero_shot_head: every template needs a '{{}}' for the class name, got {list(templates)!r}")
    rows = []
    for name in class_names:
        per_template = F.normalize(_text_embeddings(clip_model, tokenizer, [t.format(name) for t in templates]), dim=-1)
        rows.append(F.normalize(per_template.mean(dim=0), dim=-1))
    weight = torch.stack(rows) * clip_model.logit_scale.exp()
    head = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    head.weight.copy_(weight)
    head.bias.zero_()
    return head
