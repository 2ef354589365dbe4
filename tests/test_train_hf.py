"""`vitune train/eval/merge --model hf:DIR`: a local Hugging Face folder as a command-line backbone.

Tiny random transformers models written with save_pretrained (no download), a tiny image-folder task,
one epoch each.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
import yaml

import datasets
from test_train_support import results, run_cli
from vitune.backbones.create import create_backbone
from vitune.errors import RunError
from vitune.train.build import load_trained
from vitune.train.logits import logits_of

QUICK = ["--epochs", "1", "--batch-size", "4", "--warmup-epochs", "0", "--lr", "0.01", "--workers", "0"]

# (model class, config class, config fields, image processor settings)
TINY = {
    # a 10-class checkpoint head (re-initialised for the 4-class task); no q, k, v biases, so RepAdapter's
    # merge gives them one and the export's config must say qkv_bias=True
    "vit": ("ViTForImageClassification", "ViTConfig", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8, num_labels=10, qkv_bias=False),
        ("ViTImageProcessor", dict(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3))),
    # DINOv2's processor resizes the shorter side and crops (as facebook/dinov2-*: 256 then 224)
    "dinov2": ("Dinov2ForImageClassification", "Dinov2Config", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=14,
        layerscale_value=0.5),
        ("BitImageProcessor", dict(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28},
                                   do_center_crop=True, image_mean=[0.485, 0.456, 0.406],
                                   image_std=[0.229, 0.224, 0.225]))),
}


def write_hf_folder(folder, kind: str, seed: int = 0):
    model_class, config_class, fields, (processor_class, processor) = TINY[kind]
    torch.manual_seed(seed)
    getattr(transformers, model_class)(getattr(transformers, config_class)(**fields)).save_pretrained(folder)
    getattr(transformers, processor_class)(**processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return datasets.make_imagefolder(tmp_path_factory.mktemp("data"), n_per_split=8, num_classes=4, size=16)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: write_hf_folder(root / kind, kind) for kind in TINY}


def train(folder, task, out, method, *extra):
    return ["train", "--method", method, "--model", f"hf:{folder}", "--data", task, *QUICK, *extra, "--out", out]


@pytest.mark.parametrize("kind,method", [("vit", "lora"), ("vit", "repadapter"), ("dinov2", "repadapter")])
def test_train_eval_merge_a_hugging_face_folder(kind, method, hf_folders, task, tmp_path, capsys):
    folder, run = hf_folders[kind], tmp_path / "run"
    code, _, err = run_cli(train(folder, task, run, method, "--normalize", "model"), capsys)
    assert code == 0, err
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
    processor = TINY[kind][3][1]
    # the image processor's mean, std and (cropped) size are the transforms'
    assert resolved["transforms"]["mean"] == pytest.approx(processor["image_mean"])
    assert resolved["transforms"]["std"] == pytest.approx(processor["image_std"])
    assert resolved["transforms"]["img_size"] == TINY[kind][2]["image_size"]
    source = resolved["backbone"]
    assert source["model"] == f"hf:{folder}" and source["pretrained"] and len(source["weights_sha256"]) == 64

    code, out, _ = run_cli(["eval", run, "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == results(run)["accuracy"]

    merged = tmp_path / "merged"
    code, out, _ = run_cli(["merge", run, "--out", merged], capsys)
    assert code == 0 and "AutoModelForImageClassification.from_pretrained" in out
    assert sorted(p.name for p in merged.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    plain, info = transformers.AutoModelForImageClassification.from_pretrained(merged, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))  # strict
    assert plain.config.num_labels == 4
    if kind == "vit" and method == "repadapter":
        assert plain.config.qkv_bias  # the merge gave q, k, v a bias: the saved config rebuilds it
    assert json.loads((merged / "preprocessor_config.json").read_text())["image_mean"] == processor["image_mean"]

    adapted, _ = load_trained(run / "adapter")
    side = TINY[kind][2]["image_size"]
    x = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (plain.eval()(x).logits - adapted(x).logits).abs().max().item() <= 1e-5


def test_a_changed_folder_is_refused_by_eval(hf_folders, task, tmp_path, capsys):
    folder = shutil.copytree(hf_folders["vit"], tmp_path / "vit")
    assert run_cli(train(folder, task, tmp_path / "run", "lora"), capsys)[0] == 0
    processor = folder / "preprocessor_config.json"
    processor.write_text(processor.read_text().replace("0.5", "0.25"))
    code, _, err = run_cli(["eval", tmp_path / "run"], capsys)
    assert code == 2 and str(folder) in err and "changed since training" in err


def test_a_folder_without_config_or_of_an_unmapped_model_is_refused(task, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(train(empty, task, tmp_path / "run1", "lora"), capsys)
    assert code == 2 and str(empty) in err and "config.json" in err

    convnext = tmp_path / "convnext"  # transformers has an image classifier for it; vitune has no place map
    transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        num_channels=3, hidden_sizes=[8], depths=[1], num_stages=1, image_size=32)).save_pretrained(convnext)
    code, _, err = run_cli(train(convnext, task, tmp_path / "run2", "lora"), capsys)
    assert code == 2 and str(convnext) in err and "ConvNextForImageClassification" in err

    text_only = tmp_path / "bert"  # no image classifier at all
    transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                            intermediate_size=8).save_pretrained(text_only)
    code, _, err = run_cli(train(text_only, task, tmp_path / "run3", "lora"), capsys)
    assert code == 2 and str(text_only) in err and "no image classifier" in err


def test_logits_of_reads_a_tensor_or_a_model_output():
    logits = torch.randn(2, 3)
    assert logits_of(logits) is logits
    assert logits_of(transformers.modeling_outputs.ImageClassifierOutput(logits=logits)) is logits
    with pytest.raises(RunError, match="neither a tensor"):
        logits_of((logits,))


def test_img_size_and_config_fields(hf_folders):
    """--img-size where the model takes it (DINOv2 interpolates), refused where it does not (ViT); --model-kwargs
    set config fields, and one that changes a backbone shape is refused naming the tensors."""
    model, source = create_backbone(f"hf:{hf_folders['dinov2']}", num_classes=3, drop_path=0.1,
                                    model_kwargs={"img_size": 56, "hidden_dropout_prob": 0.1})
    assert source["input_size"] == 56 and model.pretrained_cfg["input_size"] == (3, 56, 56)
    assert model.config.drop_path_rate == 0.1 and model.config.hidden_dropout_prob == 0.1
    with pytest.raises(RunError, match="does not take 48x48 images"):
        create_backbone(f"hf:{hf_folders['vit']}", num_classes=3, model_kwargs={"img_size": 48})
    with pytest.raises(RunError, match="has no field 'nope'"):
        create_backbone(f"hf:{hf_folders['vit']}", num_classes=3, model_kwargs={"nope": 1})
    with pytest.raises(RunError, match="do not fit the backbone.*vit.embeddings"):
        create_backbone(f"hf:{hf_folders['vit']}", num_classes=3, model_kwargs={"hidden_size": 64})


def test_grad_checkpointing_reaches_a_hugging_face_model(hf_folders):
    from vitune.train.build import build_model
    from vitune.train.config import RunConfig

    for on in (True, False):
        config = RunConfig(method="lora", model=f"hf:{hf_folders['vit']}", grad_checkpointing=on)
        model, _, _ = build_model(config, num_classes=5, warn=False)
        layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
        assert layers and all(m.gradient_checkpointing is on for m in layers)
