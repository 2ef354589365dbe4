"""The `vitune` command's exit code says which kind of failure it was (docs/errors.md), and no traceback reaches
the user: 2 usage or configuration, 3 data, 4 adapter or weights file, 5 the run failed, 130 Ctrl-C."""

from __future__ import annotations

import errno
import json

import pytest

import vitune.train as train_package
from test_train_support import run_cli, train_args, vitune_subprocess, vtab_task  # noqa: F401
from vitune.errors import ConfigError, DataError, NonFiniteLossError, RunError, VituneError, exit_code
from vitune.train.suite import summary_error


def assert_one_line_error(err: str, fragment: str) -> None:
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("vitune: error:") and fragment in err


def test_usage_and_configuration_exit_2(vtab_task, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as stopped:  # argparse's own usage errors
        run_cli(["train", "--no-such-flag"])
    assert stopped.value.code == 2
    code, _, err = run_cli(train_args(vtab_task, tmp_path / "run", "--set", "rank=2"), capsys)
    assert code == 2
    assert_one_line_error(err, "unknown config key 'rank'")


def test_data_exit_3(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(train_args(tmp_path / "empty", tmp_path / "run"), capsys)
    assert code == 3
    assert_one_line_error(err, "no data set layout recognised")


def test_adapter_file_exit_4(vtab_task, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert run_cli(train_args(vtab_task, run, "--epochs", "1"), capsys)[0] == 0
    tensors = run / "adapter" / "adapter_model.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:50])  # a cut-short download
    code, _, err = run_cli(["eval", run], capsys)
    assert code == 4
    assert_one_line_error(err, "adapter_model.safetensors: not a readable safetensors file")


def test_run_failed_exit_5_from_a_real_process(vtab_task, tmp_path):  # noqa: F811
    process = vitune_subprocess(train_args(vtab_task, tmp_path / "run", "--lr", "1e30"))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 5
    assert_one_line_error(err, "the training loss is NaN or infinite")


def test_a_refused_write_exits_5_and_ctrl_c_130(vtab_task, tmp_path, capsys, monkeypatch):  # noqa: F811
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run"))

    monkeypatch.setattr(train_package, "train", refused)
    code, _, err = run_cli(train_args(vtab_task, tmp_path / "run"), capsys)
    assert code == 5
    assert_one_line_error(err, "Permission denied")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_package, "train", interrupted)
    code, _, err = run_cli(train_args(vtab_task, tmp_path / "run"), capsys)
    assert code == 130 and "Traceback" not in err and "--resume" in err


def test_a_wrapped_error_keeps_its_kind():
    try:
        try:
            raise DataError("bad line")
        except DataError as e:
            raise RunError(f"--data x: {e}") from None
    except RunError as wrapped:
        assert exit_code(wrapped) == 3
    assert exit_code(ConfigError("x")) == 2 and exit_code(NonFiniteLossError("x")) == 5
    assert exit_code(VituneError("x")) == 2 and exit_code(OSError(errno.ENOSPC, "full")) == 5


@pytest.mark.parametrize("codes, expected", [([2, 2], 2), ([3], 3), ([2, 5], 5), ([None], 5)])
def test_a_suite_exits_with_its_failed_runs_kind(codes, expected):
    runs = [{"task": f"t{i}", "seed": 0, "status": "failed", "exit_code": c} for i, c in enumerate(codes)]
    runs.append({"task": "ok", "seed": 0, "status": "trained", "exit_code": None})
    error = summary_error(json.loads(json.dumps({"runs": runs})))
    assert exit_code(error) == expected
