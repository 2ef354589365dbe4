"""One trigger per row of docs/errors.md (no tests here): each makes vitune raise that row's error.

A trigger takes a fresh temporary folder and performs the bad action; tests/test_errors_catalogue.py runs it,
checks the error's class and exit code, and that its message matches the row's documented message.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import timm

import vitune
from datasets import make_vtab, write_image
from helpers import make_backbone, perturb_trainable
from vitune.data import open_task


def _adapter(tmp: Path, method: str = "lora") -> Path:
    model = vitune.apply(make_backbone(), method)
    perturb_trainable(model)
    vitune.save_adapter(model, tmp / "adapter")
    return tmp / "adapter"


def missing_data_folder(tmp: Path) -> None:
    open_task(tmp / "cifar")


def empty_data_folder(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    open_task(tmp / "empty")


def missing_split_file(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", num_classes=2)
    (task / "test.txt").unlink()
    open_task(task).samples("test")


def empty_split(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", num_classes=2)
    (task / "val200.txt").write_text("\n")
    open_task(task).samples("val200")


def malformed_split_line(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", num_classes=2)
    (task / "train800.txt").write_text("images/train800/000000.jpg 0\nimages/train800/000001.jpg cat\n")
    open_task(task)


def label_out_of_range(tmp: Path) -> None:
    task = make_vtab(tmp, "svhn", num_classes=2)
    (task / "val200.txt").write_text("images/val200/000000.jpg 10\n")
    open_task(task).samples("val200")


def image_not_found(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", num_classes=2)
    (task / "images/test/000001.jpg").unlink()
    open_task(task).samples("test")


def unreadable_image(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", num_classes=2)
    (task / "images/train800/000000.jpg").write_bytes(b"this is not a jpeg")
    open_task(task).dataset("train800")[0]


def truncated_image(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", num_classes=2)
    image = write_image(task / "images/train800/000000.jpg", 0, 2, size=64)
    image.write_bytes(image.read_bytes()[:200])
    open_task(task).dataset("train800")[0]


def classes_do_not_match_the_head(tmp: Path) -> None:
    folder = _adapter(tmp)  # saved from a 5-class head
    vitune.load_adapter(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                          depth=2, embed_dim=64, num_heads=2, num_classes=10), folder)


def eval_data_classes_differ(tmp: Path) -> None:
    from vitune.train import evaluate_folder, train

    task = make_vtab(tmp, "tiny", n_per_split=8, num_classes=4)
    train({"method": "lora", "model": "vit_tiny_patch16_224", "data": str(task), "epochs": 1, "batch_size": 4,
           "warmup_epochs": 0, "workers": 0,
           "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 32, "patch_size": 8}},
          tmp / "run")
    evaluate_folder(tmp / "run", data=str(make_vtab(tmp / "other", "tiny", num_classes=2)))


def adapter_folder_missing(tmp: Path) -> None:
    vitune.load_adapter(make_backbone(), tmp / "nowhere")


def adapter_file_missing(tmp: Path) -> None:
    folder = _adapter(tmp)
    (folder / "adapter_model.safetensors").unlink()
    vitune.load_adapter(make_backbone(), folder)


def adapter_file_truncated(tmp: Path) -> None:
    folder = _adapter(tmp)
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    vitune.load_adapter(make_backbone(), folder)


def adapter_config_tampered(tmp: Path) -> None:
    folder = _adapter(tmp)
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": "2"}))
    vitune.load_adapter(make_backbone(), folder)


def adapter_tensor_not_finite(tmp: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _adapter(tmp)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors["head.weight"][0, 0] = float("nan")
    save_file(tensors, str(path), metadata={"format": "pt", "vitune_method": "lora"})
    vitune.load_adapter(make_backbone(), folder)


def adapter_of_another_method(tmp: Path) -> None:
    folder = _adapter(tmp)
    other = _adapter(tmp / "other", "bitfit")
    (folder / "adapter_model.safetensors").write_bytes((other / "adapter_model.safetensors").read_bytes())
    vitune.load_adapter(make_backbone(), folder)


def adapter_of_another_backbone(tmp: Path) -> None:
    folder = _adapter(tmp)
    vitune.load_adapter(make_backbone(seed=5), folder)  # same shapes, other weights


def weights_pickle_runs_code(tmp: Path) -> None:
    path = tmp / "weights.pth"
    path.write_bytes(pickle.dumps({"model": Marker(tmp / "marker")}))
    vitune.load_weights(make_backbone(), path)


class Marker:
    """Unpickling this creates a marker file: stands for any code a downloaded pickle could run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def unknown_method(tmp: Path) -> None:
    vitune.apply(make_backbone(), "lorra")


def unknown_config_key(tmp: Path) -> None:
    vitune.apply(make_backbone(), "lora", rank=4)


def negative_rank(tmp: Path) -> None:
    vitune.apply(make_backbone(), "lora", r=-1)


def groups_do_not_divide_the_width(tmp: Path) -> None:
    vitune.apply(make_backbone(), "repadapter", r=6, groups=6)  # 64 inputs, 6 groups


def merging_twice(tmp: Path) -> None:
    model = vitune.apply(make_backbone(), "lora")
    vitune.merge(model)
    vitune.merge(model)


def merging_a_method_that_cannot_merge(tmp: Path) -> None:
    vitune.merge(vitune.apply(make_backbone(), "adapter"))


def recipe_unknown_key(tmp: Path) -> None:
    from vitune.train.config import resolve_config

    (tmp / "r.yaml").write_text("method: lora\nlearning_rate: 0.1\n")
    resolve_config({"recipe": str(tmp / "r.yaml")})


def recipe_python_tag(tmp: Path) -> None:
    from vitune.train.config import load_recipe

    (tmp / "r.yaml").write_text(f"method: lora\nlr: !!python/object/apply:os.system ['touch {tmp / 'marker'}']\n")
    load_recipe(str(tmp / "r.yaml"))


def run_folder_not_empty(tmp: Path) -> None:
    from vitune.train.run_folder import RunFolder

    (tmp / "run").mkdir()
    (tmp / "run" / "notes.txt").write_text("mine")
    RunFolder(tmp / "run").start(resume=False)


def run_folder_in_use(tmp: Path) -> None:
    from vitune.train.claim import LOCK, claim
    from vitune.train.run_folder import RunFolder

    (tmp / "run").mkdir()
    with claim(tmp / "run" / LOCK), RunFolder(tmp / "run").hold():  # another process's lock, as flock sees it
        pass


def nan_loss(tmp: Path) -> None:
    from vitune.train import train

    task = make_vtab(tmp, "tiny", n_per_split=8, num_classes=2)
    train({"method": "lora", "model": "vit_tiny_patch16_224", "data": str(task), "lr": 1e30, "epochs": 1,
           "batch_size": 4, "warmup_epochs": 0, "workers": 0,
           "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 32, "patch_size": 8}},
          tmp / "run")


def disk_full(tmp: Path) -> None:
    import errno
    from unittest import mock

    from vitune.train import checkpoint

    def full(tensors, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    with mock.patch.object(checkpoint, "save_file", full):
        checkpoint.save_checkpoint(tmp / "checkpoint", checkpoint.TrainState(epochs_done=1))


def k_shot_class_too_small(tmp: Path) -> None:
    task = make_vtab(tmp, "tiny", n_per_split=8, num_classes=2)  # 8 images of each class in train800val200
    open_task(task, k_shot=(9, 0)).samples("kshot")


def few_shot_and_k_shot(tmp: Path) -> None:
    from vitune.train.config import resolve_config

    task = make_vtab(tmp, "tiny", n_per_split=8, num_classes=2)
    resolve_config({"method": "lora", "model": "vit_tiny_patch16_224", "data": str(task), "few_shot": [1, 0],
                    "k_shot": [1, 0]})


def search_without_a_search(tmp: Path) -> None:
    from vitune.train.search import run_search

    task = make_vtab(tmp, "tiny", n_per_split=8, num_classes=2)
    run_search(tmp / "search", None, {"method": "lora", "data": str(task), "recipe": "lora_vtab"})  # no grid


def pevit_wd_grid_malformed(tmp: Path) -> None:
    from vitune.train.search_pevit import WeightDecayGrid

    WeightDecayGrid.parse("-6,6")


def hf_folder_without_config(tmp: Path) -> None:
    from vitune.backbones.hf_create import create_hf_backbone

    (tmp / "hf").mkdir()
    create_hf_backbone(f"hf:{tmp / 'hf'}", num_classes=2, model_kwargs={}, drop_path=0.0, init_seed=0)


def _convnext_folder(folder: Path) -> Path:
    """A tiny random ConvNeXt written with save_pretrained: an image classifier, but no transformer blocks."""
    import transformers

    transformers.ConvNextForImageClassification(
        transformers.ConvNextConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], image_size=32)
    ).save_pretrained(folder)
    return folder


def hf_model_type_not_mapped(tmp: Path) -> None:
    from vitune.backbones.hf_create import create_hf_backbone

    folder = _convnext_folder(tmp / "hf")
    create_hf_backbone(f"hf:{folder}", num_classes=2, model_kwargs={}, drop_path=0.0, init_seed=0)


def peft_option_refused(tmp: Path) -> None:
    from vitune.compat.peft import load_peft_lora

    (tmp / "peft").mkdir()  # the config alone: it is refused before the weights are read
    (tmp / "peft" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "use_dora": True, "r": 2, "lora_alpha": 2, "target_modules": ["qkv"]}))
    load_peft_lora(make_backbone(), tmp / "peft")


def zero_shot_template_without_a_place(tmp: Path) -> None:
    from test_backbones_hf import tiny_clip, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    vitune.zero_shot_head(tiny_clip(len(tokenizer)), tokenizer, ["cat", "dog"], templates=["a photo"])


# row id of docs/errors.md -> its trigger: every public function above
TRIGGERS: dict[str, Callable[[Path], None]] = {
    name: value for name, value in dict(globals()).items()
    if not name.startswith("_") and not isinstance(value, type) and getattr(value, "__module__", None) == __name__
}
