"""build_transforms: output shapes, normalisation values, which recipe is random, and the recorded info."""

import json
import random

import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vitune.data import build_transforms, default_transform_kind
from vitune.errors import DataError

PIXEL = (200, 100, 50)


def flat_image(width: int = 40, height: int = 24) -> Image.Image:
    return Image.new("RGB", (width, height), PIXEL)


def striped_image(width: int = 40, height: int = 24) -> Image.Image:
    """Left half black, right half white: a flip or a crop changes it."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), (width // 2, 0, width, height))
    return image


@pytest.mark.parametrize("kind", ["vtab", "fgvc"])
def test_both_transforms_give_square_float_tensors(kind):
    train_tf, eval_tf, _ = build_transforms(kind, img_size=32)
    for transform in (train_tf, eval_tf):
        out = transform(flat_image(40, 24))  # not square: the recipes must still give img_size x img_size
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize(
    "normalize, mean, std",
    [
        ("imagenet", IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ("inception", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ],
)
def test_normalisation_values(normalize, mean, std):
    _, eval_tf, info = build_transforms("vtab", img_size=16, normalize=normalize)
    out = eval_tf(flat_image())
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip(PIXEL, mean, std)])
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)
    assert info["normalize"] == normalize and info["mean"] == pytest.approx(mean) and info["std"] == pytest.approx(std)


def test_model_normalisation_reads_the_pretrained_cfg():
    cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "input_size": (3, 224, 224)}
    _, eval_tf, info = build_transforms("fgvc", img_size=16, normalize="model", pretrained_cfg=cfg)
    assert info["mean"] == [0.1, 0.2, 0.3] and info["std"] == [0.4, 0.5, 0.6]
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip(PIXEL, cfg["mean"], cfg["std"])])
    assert torch.allclose(eval_tf(flat_image()).mean(dim=(1, 2)), expected, atol=1e-5)


def test_model_normalisation_accepts_a_timm_model_cfg():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                              embed_dim=32, num_heads=2)
    _, _, info = build_transforms("vtab", img_size=32, normalize="model", pretrained_cfg=model.pretrained_cfg)
    assert info["mean"] == list(model.pretrained_cfg["mean"])


def test_vtab_recipe_has_no_randomness_and_trains_as_it_evaluates():
    train_tf, eval_tf, info = build_transforms("vtab", img_size=16)
    image = striped_image()
    outputs = []
    for seed in range(4):
        torch.manual_seed(seed)
        random.seed(seed)
        outputs.append(train_tf(image))
    assert all(torch.equal(out, outputs[0]) for out in outputs)
    assert torch.equal(eval_tf(image), outputs[0])
    assert info["augmentation"] is None and info["train"] == info["eval"]
    assert info["train"][0].startswith("Resize(size=(16, 16), interpolation=bicubic")  # both sides: no aspect


def test_fgvc_training_is_random_and_evaluation_is_not():
    train_tf, eval_tf, info = build_transforms("fgvc", img_size=16)
    image = striped_image()
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        random.seed(seed)
        seen.add(train_tf(image).numpy().tobytes())
    assert len(seen) > 1
    assert torch.equal(eval_tf(image), eval_tf(image))
    assert info["eval_crop_pct"] == 0.875 and info["augmentation"]["hflip"] == 0.5


def test_fgvc_evaluation_resizes_to_size_over_0875_then_crops_the_centre():
    _, _, info = build_transforms("fgvc", img_size=224)
    assert info["eval"][0].startswith("Resize(size=256, interpolation=bicubic")
    assert info["eval"][1] == "CenterCrop(size=(224, 224))"


def test_info_is_json_ready_and_complete():
    _, _, info = build_transforms("fgvc", img_size=32, normalize="inception")
    assert json.loads(json.dumps(info)) == info
    assert {"kind", "img_size", "interpolation", "mean", "std", "normalize", "train", "eval"} <= set(info)
    assert (info["kind"], info["img_size"], info["interpolation"]) == ("fgvc", 32, "bicubic")


def test_default_transform_kind():
    assert default_transform_kind("vtab") == "vtab"
    assert [default_transform_kind(x) for x in ("fgvc", "imagefolder", "fewshot")] == ["fgvc"] * 3
    with pytest.raises(DataError, match="layout"):
        default_transform_kind("coco")


def test_bad_transform_arguments():
    with pytest.raises(DataError, match="kind 'imagenet'"):
        build_transforms("imagenet")
    with pytest.raises(DataError, match="normalize 'clip'"):
        build_transforms("vtab", normalize="clip")
    with pytest.raises(DataError, match="pretrained_cfg"):
        build_transforms("vtab", normalize="model")
    with pytest.raises(DataError, match="img_size"):
        build_transforms("vtab", img_size=0)
