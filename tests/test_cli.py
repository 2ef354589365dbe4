"""The `vitune` command: the zero-argument job, the speckle demo and the method list."""

from vitune import cli


def test_demo_job_end_to_end(tmp_path, capsys):
    assert cli.main(["demo", "--steps", "60", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "OK: the reloaded and merged models give the same outputs" in out
    accuracy_after = float(out.split("before, ")[1].split("%")[0])
    assert accuracy_after > 80  # the tiny run really learns the colour task
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"
    ]


def test_demo_with_config_and_error(tmp_path, capsys):
    assert cli.main(["demo", "--steps", "2", "--method", "bitfit", "--set", "norms=true",
                     "--out", str(tmp_path)]) == 0
    assert cli.main(["demo", "--steps", "2", "--set", "rank=2", "--out", str(tmp_path)]) == 2
    assert "unknown config key 'rank'" in capsys.readouterr().err


def test_demo_counts_add_up_with_extra(tmp_path, capsys):
    """Consolidator also trains backbone biases and norms: the line shows them, so the parts sum to trainable."""
    assert cli.main(["demo", "--steps", "1", "--method", "consolidator", "--set", "fc_groups=[16]",
                     "--out", str(tmp_path / "c")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("method consolidator: 14,592 method parameters, 3,456 extra ")
    assert "260 head, 18,308 trainable" in first  # 14,592 + 3,456 + 260
    assert cli.main(["demo", "--steps", "1", "--out", str(tmp_path / "l")]) == 0
    assert "extra" not in capsys.readouterr().out.splitlines()[0]  # LoRA trains nothing of the backbone


def test_methods_listing(capsys):
    assert cli.main(["methods"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["lora"] == ["yes", "294,912"]
    assert rows["adaptformer"] == ["no", "1,189,632"]
    assert set(rows) == set(__import__("vitune").methods())


def test_no_arguments_runs_the_quickstart_job(monkeypatch):
    """`vitune` alone and `vitune quickstart FLAGS` go to the quickstart job with its own flags."""
    seen = []
    monkeypatch.setattr("vitune.quickstart.command.main", lambda argv: seen.append(argv) or 0)
    assert cli.main([]) == 0
    assert cli.main(["quickstart", "--methods", "linear,lora", "--epochs", "1"]) == 0
    assert cli.main(["--out", "elsewhere"]) == 0
    assert seen == [[], ["--methods", "linear,lora", "--epochs", "1"], ["--out", "elsewhere"]]
