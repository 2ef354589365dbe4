"""A CLIP image classifier the way KAdaptation and PEViT set theirs up: CLIP's image tower and visual projection,
the embedding L2-normalised, a linear head on it (``vitune.zero_shot_head`` starts it as CLIP's zero-shot
classifier). The hf_clip family maps it: the tower's layers are adapted, the projection is frozen backbone,
``head`` is the classifier head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CLIPZeroShotClassifier(nn.Module):
    """logits = head(normalise(visual_projection(vision_model(pixel_values).pooler_output))).

    Args:
        clip: a transformers ``CLIPModel`` or ``CLIPVisionModelWithProjection``; its ``vision_model`` and
            ``visual_projection`` are used (shared, not copied; a CLIPModel's text tower is left out).
        head: a linear layer from the projection width to the classes (``vitune.zero_shot_head``'s).
    """

    def __init__(self, clip: nn.Module, head: nn.Linear):
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.head = head

    def image_embeddings(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """The L2-normalised image embedding the head reads."""
        pooled = self.vision_model(pixel_values=pixel_values, **kwargs).pooler_output
        return F.normalize(self.visual_projection(pooled), dim=-1)

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import ImageClassifierOutput

        return ImageClassifierOutput(logits=self.head(self.image_embeddings(pixel_values, **kwargs)))
