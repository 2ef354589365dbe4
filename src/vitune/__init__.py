"""vitune: parameter-efficient transfer learning for pretrained vision transformers."""

__version__ = "0.1.0"

from .api import (  # noqa: E402
    applied_method,
    apply,
    count_parameters,
    disable_adapter,
    is_mergeable,
    merge,
    merged_model_args,
    parameter_groups,
    set_grad_checkpointing,
    trainable_parameters,
    unwrap,
)
from . import methods  # noqa: E402  (the methods package; calling it lists their names)
from .errors import (  # noqa: E402
    AdapterFileError,
    BackboneError,
    ConfigError,
    NotMergeableError,
    UnknownMethodError,
    VituneError,
)
from .io import load_adapter, read_adapter_config, save_adapter, save_merged  # noqa: E402
from .recommended import recommended_config  # noqa: E402
from .backbones.weights import WeightsFileError, load_weights  # noqa: E402
from .backbones.hf_clip_classifier import CLIPZeroShotClassifier  # noqa: E402
from .zero_shot import zero_shot_head  # noqa: E402

__all__ = [
    "AdapterFileError",
    "BackboneError",
    "CLIPZeroShotClassifier",
    "ConfigError",
    "NotMergeableError",
    "UnknownMethodError",
    "VituneError",
    "WeightsFileError",
    "applied_method",
    "apply",
    "count_parameters",
    "disable_adapter",
    "is_mergeable",
    "load_adapter",
    "load_weights",
    "merge",
    "merged_model_args",
    "methods",
    "parameter_groups",
    "read_adapter_config",
    "recommended_config",
    "save_adapter",
    "save_merged",
    "set_grad_checkpointing",
    "trainable_parameters",
    "unwrap",
    "zero_shot_head",
]
