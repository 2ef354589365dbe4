"""Every row of docs/errors.md reaches a `vitune` command user as one line, never a traceback: the command that
meets that bad input exits with the row's code and prints `vitune: error: ` and the row's message.

tests/test_errors_catalogue.py checks each row's error in Python; here each row is met through the command
line instead (the same files, flags, folders), except the rows no command can reach (NOT_FROM_THE_CLI).
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import datasets
import vitune.train.checkpoint as checkpoint_module
from errors_catalogue import Marker, _convnext_folder
from test_errors_catalogue import catalogue, pattern
from test_train_support import run_cli
from vitune.train.claim import LOCK, claim

# The catalogue's backbone on the command line: width 64, so its messages ("64 inputs") read the same.
MODEL = ["--model", "vit_tiny_patch16_224",
         "--model-kwargs", "depth=1", "embed_dim=64", "num_heads=2", "img_size=32", "patch_size=8"]
QUICK = ["--epochs", "1", "--batch-size", "4", "--warmup-epochs", "0", "--workers", "0"]

NOT_FROM_THE_CLI = {
    "merging_twice": "vitune merge loads the adapter onto a fresh backbone and merges it once; only Python code "
                     "can call vitune.merge on a merged model",
    "classes_do_not_match_the_head": "vitune eval re-creates the backbone with the adapter's own head; data with "
                                     "another class count is the row eval_data_classes_differ",
    "peft_option_refused": "no command loads a PEFT adapter folder; vitune.compat.peft.load_peft_lora does",
    "zero_shot_template_without_a_place": "no command builds CLIP's zero-shot head; vitune.zero_shot_head does",
}


def train(data, out, *extra, method: str = "lora") -> list:
    return ["train", "--method", method, *MODEL, "--data", data, *QUICK, *extra, "--out", out]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny LoRA run (its task is `trained.parent / 'tiny'`) and a finished `adapter` run beside it."""
    root = tmp_path_factory.mktemp("trained")
    task = datasets.make_vtab(root, "tiny", n_per_split=8, num_classes=4)
    for method in ("lora", "adapter"):
        assert run_cli(train(task, root / method, method=method))[0] == 0
    return root


def copy_adapter(trained: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(trained / "lora" / "adapter", tmp / "adapter"))


def edit_config(adapter: Path, edit) -> None:
    path = adapter / "adapter_config.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def resave(adapter: Path, edit, method: str = "lora") -> None:
    path = adapter / "adapter_model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt", "vitune_method": method})


def vtab(tmp: Path, name: str = "tiny") -> Path:
    return datasets.make_vtab(tmp, name, n_per_split=8, num_classes=2)


# row id -> what the user does: (tmp, trained) -> the command's arguments
def missing_data_folder(tmp, trained):
    return train(tmp / "cifar", tmp / "run")


def empty_data_folder(tmp, trained):
    (tmp / "empty").mkdir()
    return train(tmp / "empty", tmp / "run")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


# Data rows: row -> (how a fresh 2-class VTAB-1k task is broken, the train flags that make the run read it)
BROKEN_DATA = {
    "missing_split_file": (lambda task: (task / "test.txt").unlink(), []),
    "empty_split": (lambda task: (task / "val200.txt").write_text("\n"), ["--eval-split", "val200"]),
    "malformed_split_line": (lambda task: (task / "train800.txt").write_text(
        "images/train800/000000.jpg 0\nimages/train800/000001.jpg cat\n"), []),
    "label_out_of_range": (lambda task: (task / "val200.txt").write_text("images/val200/000000.jpg 10\n"),
                           ["--eval-split", "val200"]),
    "image_not_found": (lambda task: (task / "images/test/000001.jpg").unlink(), []),
    "unreadable_image": (lambda task: (task / "images/train800/000000.jpg").write_bytes(b"this is not a jpeg"),
                         ["--train-split", "train800"]),
    "truncated_image": (lambda task: truncate(datasets.write_image(task / "images/train800/000000.jpg", 0, 2,
                                                                   size=64)), ["--train-split", "train800"]),
}


def broken_data(row: str, tmp: Path) -> list:
    edit, flags = BROKEN_DATA[row]
    task = vtab(tmp, "svhn" if row == "label_out_of_range" else "tiny")  # svhn: a task whose class count is known
    edit(task)
    return train(task, tmp / "run", *flags)


def eval_data_classes_differ(tmp, trained):
    return ["eval", trained / "lora", "--data", vtab(tmp)]  # 2 classes; the adapter's head has 4


def adapter_folder_missing(tmp, trained):
    return ["eval", tmp / "nowhere", "--data", trained / "tiny"]


def adapter_file_missing(tmp, trained):
    adapter = copy_adapter(trained, tmp)
    (adapter / "adapter_model.safetensors").unlink()
    return ["eval", adapter, "--data", trained / "tiny"]


def adapter_file_truncated(tmp, trained):
    adapter = copy_adapter(trained, tmp)
    path = adapter / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return ["eval", adapter, "--data", trained / "tiny"]


def adapter_config_tampered(tmp, trained):
    adapter = copy_adapter(trained, tmp)
    edit_config(adapter, lambda document: document.update(format_version="2"))
    return ["eval", adapter, "--data", trained / "tiny"]


def adapter_tensor_not_finite(tmp, trained):
    adapter = copy_adapter(trained, tmp)
    resave(adapter, lambda tensors: tensors["head.weight"].__setitem__((0, 0), float("nan")))
    return ["eval", adapter, "--data", trained / "tiny"]


def adapter_of_another_method(tmp, trained):
    adapter = copy_adapter(trained, tmp)
    bitfit = tmp / "bitfit.safetensors"
    save_file({"head.bias": load_file(str(adapter / "adapter_model.safetensors"))["head.bias"]}, str(bitfit),
              metadata={"format": "pt", "vitune_method": "bitfit"})
    shutil.copy(bitfit, adapter / "adapter_model.safetensors")
    return ["eval", adapter, "--data", trained / "tiny"]


def adapter_of_another_backbone(tmp, trained):
    adapter = copy_adapter(trained, tmp)  # it says its backbone was another seed's init: other frozen weights
    edit_config(adapter, lambda document: document["backbone"]["source"].update(init_seed=7))
    return ["eval", adapter, "--data", trained / "tiny"]


def weights_pickle_runs_code(tmp, trained):
    (tmp / "weights.pth").write_bytes(pickle.dumps({"model": Marker(tmp / "marker")}))
    return train(trained / "tiny", tmp / "run", "--weights", tmp / "weights.pth")


def unknown_method(tmp, trained):
    return train(trained / "tiny", tmp / "run", method="lorra")


def unknown_config_key(tmp, trained):
    return train(trained / "tiny", tmp / "run", "--set", "rank=4")


def negative_rank(tmp, trained):
    return train(trained / "tiny", tmp / "run", "--set", "r=-1")


def groups_do_not_divide_the_width(tmp, trained):
    return train(trained / "tiny", tmp / "run", "--set", "r=6", "groups=6", method="repadapter")


def merging_a_method_that_cannot_merge(tmp, trained):
    return ["merge", trained / "adapter", "--out", tmp / "merged"]


def recipe_unknown_key(tmp, trained):
    (tmp / "r.yaml").write_text("method: lora\nlearning_rate: 0.1\n")
    return train(trained / "tiny", tmp / "run", "--recipe", tmp / "r.yaml")


def recipe_python_tag(tmp, trained):
    (tmp / "r.yaml").write_text(f"method: lora\nlr: !!python/object/apply:os.system ['touch {tmp / 'marker'}']\n")
    return train(trained / "tiny", tmp / "run", "--recipe", tmp / "r.yaml")


def run_folder_not_empty(tmp, trained):
    (tmp / "run").mkdir()
    (tmp / "run" / "notes.txt").write_text("mine")
    return train(trained / "tiny", tmp / "run")


def k_shot_class_too_small(tmp, trained):
    return train(vtab(tmp), tmp / "run", "--k-shot", "9", "0")  # 8 images of each class


def few_shot_and_k_shot(tmp, trained):
    return train(trained / "tiny", tmp / "run", "--few-shot", "1", "0", "--k-shot", "1", "0")


def search(root, trained, *flags) -> list:
    return ["search", root, "--method", "lora", *MODEL, "--data", trained / "tiny", *QUICK, *flags]


def search_without_a_search(tmp, trained):
    return search(tmp / "search", trained, "--recipe", "lora_vtab")  # no --grid, no --strategy, and its recipe has none


def pevit_wd_grid_malformed(tmp, trained):
    return search(tmp / "search", trained, "--strategy", "pevit", "--pevit-wd-grid=-6,6")  # '=': argparse reads -6,6 as a flag


def hf_train(folder, trained, tmp) -> list:
    return ["train", "--method", "lora", "--model", f"hf:{folder}", "--data", trained / "tiny", *QUICK,
            "--out", tmp / "run"]


def hf_folder_without_config(tmp, trained):
    (tmp / "hf").mkdir()
    return hf_train(tmp / "hf", trained, tmp)


def hf_model_type_not_mapped(tmp, trained):
    return hf_train(_convnext_folder(tmp / "hf"), trained, tmp)


def nan_loss(tmp, trained):
    task = datasets.make_vtab(tmp, "tiny", n_per_split=8, num_classes=2)
    return train(task, tmp / "run", "--lr", "1e30", "--model-kwargs", "depth=1", "embed_dim=32", "num_heads=2",
                 "img_size=32", "patch_size=8")


FROM_THE_CLI = {name: value for name, value in dict(globals()).items()
                if callable(value) and getattr(value, "__code__", None) is not None
                and value.__code__.co_varnames[:2] == ("tmp", "trained")}
FROM_THE_CLI.update({row: (lambda tmp, trained, row=row: broken_data(row, tmp)) for row in BROKEN_DATA})
# Rows whose cause is around the command, not in its arguments: set up here, then the command is run.
AROUND = ("run_folder_in_use", "disk_full")


def test_every_row_is_met_from_the_cli_or_says_why_not():
    assert set(FROM_THE_CLI) | set(AROUND) | set(NOT_FROM_THE_CLI) == set(catalogue())
    assert not set(FROM_THE_CLI) & set(NOT_FROM_THE_CLI)


def assert_row(row: str, code: int, err: str, tmp: Path) -> None:
    want_code, template = catalogue()[row]
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("vitune: error: "), err
    message = lines[-1][len("vitune: error: "):]
    assert pattern(template).search(message), f"docs/errors.md row {row}:\n  {template}\nprinted:\n  {message}"
    assert code == want_code, message
    assert not (tmp / "marker").exists()  # nothing a file held ran


@pytest.mark.parametrize("row", sorted(FROM_THE_CLI))
def test_the_command_prints_the_row_and_exits_with_its_code(row, trained, tmp_path, capsys):
    code, _, err = run_cli(FROM_THE_CLI[row](tmp_path, trained), capsys)
    assert_row(row, code, err, tmp_path)


def test_run_folder_in_use_from_the_cli(trained, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with claim(tmp_path / "run" / LOCK):  # another process's lock, as flock sees it
        code, _, err = run_cli(train(trained / "tiny", tmp_path / "run"), capsys)
    assert_row("run_folder_in_use", code, err, tmp_path)


def test_disk_full_from_the_cli(trained, tmp_path, capsys, monkeypatch):
    def full(tensors, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    code, _, err = run_cli(train(trained / "tiny", tmp_path / "run"), capsys)
    assert_row("disk_full", code, err, tmp_path)
