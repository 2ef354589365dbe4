"""The one place a model's output becomes the logits the loss and the accuracy read.

timm models return the logits tensor; Hugging Face classifiers return a ``ModelOutput`` whose ``.logits``
holds them (``ImageClassifierOutput``). Anything else is a model vitune cannot train as a classifier.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import RunError


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a classifier's output: a tensor as is, a ``ModelOutput``'s ``.logits``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise RunError(f"the model returned a {type(output).__name__}, neither a tensor of logits nor an output "
                   "with .logits (a Hugging Face ModelOutput)")
