"""Files from strangers run no code: a real malicious pickle given as weights (Python API and `vitune train
--weights`) or as an adapter's tensor file, and YAML with Python tags (a recipe, a run's config.yaml), are
refused with a clear message, and the marker file their payload would create never appears."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import vitune
from helpers import make_backbone
from test_train_support import TINY_MODEL, run_cli, train_args, vtab_task  # noqa: F401


class Payload:
    """Unpickling runs `code` (here: create a marker file), as a booby-trapped checkpoint would."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class ShellPayload:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def write_malicious(path, marker, kind: str):
    """A weights file whose unpickling creates `marker`: torch's zip format or a bare pickle."""
    state = {"model": {"blocks.0.norm1.weight": torch.ones(64)}}
    if kind == "torch.save + exec":
        torch.save({**state, "payload": Payload(f"open({str(marker)!r}, 'w').write('ran')")}, path)
    else:
        path.write_bytes(pickle.dumps({**state, "payload": ShellPayload(f"touch '{marker}'")}, protocol=2))
    return path


KINDS = ["torch.save + exec", "pickle + os.system"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_payload_is_real(kind, tmp_path):
    """Loaded the unsafe way, the file does run its code: the refusals below are refusing something real."""
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.pth", marker, kind)
    if kind == "torch.save + exec":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
@pytest.mark.parametrize("kind", KINDS)
def test_load_weights_refuses_a_malicious_pickle(kind, suffix, tmp_path):
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / f"evil{suffix}", marker, kind)
    with pytest.raises(vitune.WeightsFileError, match=r"evil.* unpickling them could run code, so vitune refuses it"):
        vitune.load_weights(make_backbone(), path)
    assert not marker.exists()


def test_train_weights_flag_refuses_a_malicious_pickle(vtab_task, tmp_path, capsys):  # noqa: F811
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.pth", marker, "pickle + os.system")
    code, _, err = run_cli(train_args(vtab_task, tmp_path / "run", "--weights", path), capsys)
    assert code == 4 and "Traceback" not in err
    assert err.startswith(f"vitune: error: --weights {path}") and "could run code" in err
    assert not marker.exists() and not (tmp_path / "run" / "results.json").exists()


def test_a_pickle_in_place_of_an_adapter_file_is_refused(tmp_path, capsys):
    model = vitune.apply(make_backbone(), "lora")
    vitune.save_adapter(model, tmp_path / "adapter")
    marker = tmp_path / "marker"
    write_malicious(tmp_path / "adapter" / "adapter_model.safetensors", marker, "torch.save + exec")
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_model\.safetensors: not a readable safetensors"):
        vitune.load_adapter(make_backbone(), tmp_path / "adapter")
    assert not marker.exists()


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
])
def test_recipe_with_a_python_tag_is_refused(tag, vtab_task, tmp_path, capsys):  # noqa: F811
    marker = tmp_path / "marker"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text("method: lora\nlr: " + tag.format(marker=marker) + "\n")
    code, _, err = run_cli(train_args(vtab_task, tmp_path / "run", "--recipe", recipe), capsys)
    assert code == 2 and "Traceback" not in err
    shown = tag.split(" ")[0]  # the tag as written: !!python/object/apply:os.system
    assert f"recipe {recipe}, line 2: the YAML tag '{shown}' is refused on purpose: a recipe is data" in err
    assert "could run code (nothing was run)" in err
    assert not marker.exists()


def test_run_config_with_a_python_tag_is_refused_on_resume(vtab_task, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert run_cli(train_args(vtab_task, run, "--epochs", "1"), capsys)[0] == 0
    (run / "results.json").unlink()
    marker = tmp_path / "marker"
    (run / "config.yaml").write_text(f"run: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, err = run_cli(["train", "--out", run, "--resume"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{run / 'config.yaml'}, line 1: the YAML tag '!!python/object/apply:os.system' is refused on purpose: " \
           "a run configuration is data" in err
    assert not marker.exists()
