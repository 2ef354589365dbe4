"""The two transform recipes of the PETL benchmarks, built with timm's ``create_transform``.

- ``vtab``: resize to img_size x img_size (bicubic), no augmentation, the same for training and evaluation:
  the VTAB-1k recipe of RepAdapter, ARC and Consolidator (the official RepAdapter train.py and dataset.py,
  whose loader ARC reuses; Consolidator's lib/datasets.py with --direct_resize).
- ``fgvc``: training takes a random resized crop (scale 0.08-1, bicubic) and a horizontal flip; evaluation
  resizes the shorter side to img_size / 0.875 and takes the centre crop (AdaptFormer's main_image.py).

Normalisation is an explicit choice, recorded with the rest in the returned ``info``:
``imagenet`` (timm's IMAGENET_DEFAULT_MEAN/STD, the VTAB recipes'), ``inception`` (0.5 / 0.5, Google's
``jx_`` / AugReg checkpoints), ``model`` (the mean/std of the backbone's ``pretrained_cfg``) or ``none``
(pixels in [0, 1]).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    create_transform,
    resolve_data_config,
)

from ..errors import DataError

TRANSFORM_KINDS = ("vtab", "fgvc")
NORMALIZATIONS = ("imagenet", "inception", "model", "none")
INTERPOLATION = "bicubic"
FGVC_CROP_PCT = 0.875  # 224 / 256
FGVC_SCALE = (0.08, 1.0)
FGVC_RATIO = (3 / 4, 4 / 3)
FGVC_HFLIP = 0.5

_FIXED_STATS = {
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "inception": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # Normalize by (x - 0) / 1: exactly ToTensor's [0, 1]
}


def default_transform_kind(layout: str) -> str:
    """The recipe a layout's benchmark uses: ``vtab`` for VTAB-1k, ``fgvc`` for every other layout."""
    if layout not in ("vtab", "fgvc", "imagefolder", "fewshot"):
        raise DataError(f"unknown data layout {layout!r}")
    return "vtab" if layout == "vtab" else "fgvc"


def normalization(normalize: str, pretrained_cfg: Any = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of a normalisation choice; ``model`` reads them from `pretrained_cfg` through timm."""
    if normalize in _FIXED_STATS:
        mean, std = _FIXED_STATS[normalize]
    elif normalize == "model":
        if pretrained_cfg is None:
            raise DataError("normalize='model' needs the backbone's pretrained_cfg (model.pretrained_cfg)")
        cfg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else dict(pretrained_cfg)
        config = resolve_data_config(pretrained_cfg=cfg)
        mean, std = config["mean"], config["std"]
    else:
        raise DataError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def build_transforms(kind: str, img_size: int = 224, normalize: str = "imagenet",
                     pretrained_cfg: Mapping[str, Any] | Any = None) -> tuple[Callable, Callable, dict[str, Any]]:
    """The training transform, the evaluation transform and a JSON-ready record of both.

    Args:
        kind: ``"vtab"`` or ``"fgvc"`` (see the module docstring; :func:`default_transform_kind` picks one).
        img_size: the side of the square the model sees.
        normalize: ``"imagenet"``, ``"inception"``, ``"model"`` or ``"none"``.
        pretrained_cfg: the backbone's ``model.pretrained_cfg``; required by ``normalize="model"``.

    Each transform takes a PIL RGB image and returns a float tensor (3, img_size, img_size).
    """
    if kind not in TRANSFORM_KINDS:
        raise DataError(f"unknown transform kind {kind!r}; choose one of {', '.join(TRANSFORM_KINDS)}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise DataError(f"img_size must be a positive integer, got {img_size!r}")
    mean, std = normalization(normalize, pretrained_cfg)
    common = dict(input_size=img_size, interpolation=INTERPOLATION, mean=mean, std=std)
    info: dict[str, Any] = {
        "kind": kind,
        "img_size": img_size,
        "interpolation": INTERPOLATION,
        "normalize": normalize,
        "mean": list(mean),
        "std": list(std),
    }
    if kind == "vtab":
        # 'squash' resizes both sides to img_size (no aspect kept); the centre crop after it is then a no-op
        def make():
            return create_transform(is_training=False, crop_pct=1.0, crop_mode="squash", **common)

        train, evaluation = make(), make()
        info["augmentation"] = None
    else:
        train = create_transform(
            is_training=True, scale=FGVC_SCALE, ratio=FGVC_RATIO, hflip=FGVC_HFLIP, vflip=0.0,
            color_jitter=None, auto_augment=None, re_prob=0.0, **common,
        )
        evaluation = create_transform(is_training=False, crop_pct=FGVC_CROP_PCT, crop_mode="center", **common)
        info["augmentation"] = {"scale": list(FGVC_SCALE), "ratio": list(FGVC_RATIO), "hflip": FGVC_HFLIP}
        info["eval_crop_pct"] = FGVC_CROP_PCT
    info["train"] = [repr(t) for t in train.transforms]
    info["eval"] = [repr(t) for t in evaluation.transforms]
    return train, evaluation, info
