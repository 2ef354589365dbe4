"""vitune bench: the peers' math, each variant measured in-process, and the command end to end on a tiny ViT."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vitune
from vitune import cli
from vitune.bench.fresh_process import measure
from vitune.bench.official_repadapter import ConvRepAdapter, apply_official_repadapter, merge_official_repadapter
from vitune.bench.variants import parse_variant
from vitune.errors import VituneError

from helpers import TINY, image_batch, make_backbone

TINY_KWARGS = {k: v for k, v in TINY.items() if k != "num_classes"}  # the bench sets its own classes
TINY_SETTINGS = dict(model_kwargs=TINY_KWARGS, batch_size=2, threads=1, num_classes=5)


def test_official_repadapter_form_computes_vitune_s_repadapter_and_merges():
    x = image_batch(make_backbone())
    ours = vitune.apply(make_backbone(), "repadapter", dropout=0.0, scale=0.5).eval()
    theirs = apply_official_repadapter(make_backbone(), dropout=0.0, scale=0.5).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the same non-zero tensors in both forms
        for name, module in theirs.named_modules():
            if isinstance(module, ConvRepAdapter):
                adapter = ours.get_submodule(name.removesuffix(".0")).repadapter
                for conv, weight, bias in ((module.conv_A, "weight_A", "bias_A"), (module.conv_B, "weight_B", "bias_B")):
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
                    getattr(adapter, weight).copy_(conv.weight[:, :, 0])
                    getattr(adapter, bias).copy_(conv.bias)
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
        merge_official_repadapter(theirs)
        assert not any(isinstance(m, ConvRepAdapter) for m in theirs.modules())
        torch.testing.assert_close(theirs(x), expected, rtol=0, atol=1e-5)
    trainable = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}  # merged adapters are gone; the head still trains


def test_peft_lora_adapts_the_layers_vitune_s_lora_qkv_adapts():
    pytest.importorskip("peft")
    from vitune.bench.peft_lora import apply_peft_lora

    theirs = apply_peft_lora(make_backbone())
    ours = vitune.apply(make_backbone(), "lora", targets=["qkv"])
    peft_layers = {n.removeprefix("base_model.model.").removesuffix(".lora_A") for n, _ in theirs.named_modules()
                   if n.endswith(".lora_A")}
    assert peft_layers == {n for n, m in ours.named_modules() if hasattr(m, "lora_A")}
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(theirs) == count(ours)  # same adapters and the same head train


@pytest.mark.parametrize("name", ["full", "floor", "lora_qkv", "peft_lora_qkv", "repadapter_official", "ssf+ckpt"])
def test_every_kind_of_variant_is_measured(name):
    if name.startswith("peft"):
        pytest.importorskip("peft")
    result = measure({"settings": TINY_SETTINGS, "variant": name, "memory": False, "inference": True, "storage": True,
                      "flops": True})
    assert result["step_s"] > 0 and result["peak_mib"] > 0 and result["page_faults_per_step"] >= 0
    assert result["step_flops"] > 0
    if name != "floor":  # merging leaves the plain model's products; unmerged, the adapter adds its own
        assert result["merged_forward_flops"] == result["plain_forward_flops"] <= result["unmerged_forward_flops"]
    assert (result["trainable"] == 0) == (name == "floor")
    assert result["plain_img_s"] > 0 and result["unmerged_img_s"] > 0
    assert (result["merged_img_s"] is None) == (name == "floor")
    assert result["full_checkpoint_bytes"] > 0
    assert (result["adapter_bytes"] is None) == (name == "floor")


def test_step_flops_count_forward_and_backward_and_leave_no_gradients():
    from torch.utils.flop_counter import FlopCounterMode

    from vitune.bench.step import BenchSettings, cpu_attention_flops, build_backbone, count_step_flops, input_batch
    from vitune.bench.variants import adapt
    from vitune.train.build import input_size

    settings = BenchSettings(**TINY_SETTINGS)
    size = input_size(build_backbone(settings))
    flops = {}
    for name in ("full", "floor", "lora", "lora+ckpt"):
        adapted = adapt(parse_variant(name), build_backbone(settings))
        flops[name] = count_step_flops(adapted, settings, size)
        assert all(p.grad is None for p in adapted.model.parameters()), name
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter, torch.no_grad():
        build_backbone(settings)(input_batch(settings, size)[0])
    forward = counter.get_total_flops()
    # A linear's backward computes two products of its forward's size under full fine-tuning (the input's and the
    # weight's gradients), one in the floor; the patch projection has no input gradient but under the floor (on
    # this tiny ViT it is a tenth of the forward, so LoRA's step computes less than the floor's here).
    assert flops["full"] == pytest.approx(3 * forward, rel=0.1)
    assert flops["floor"] == pytest.approx(2 * forward, rel=0.1)
    assert flops["lora"] < flops["full"]
    # The recomputed forward counts, up to the last tensor the backward needs (torch stops recomputing there).
    assert flops["lora"] + 0.5 * forward < flops["lora+ckpt"] < flops["lora"] + forward


def test_cpu_attention_is_counted():
    from torch.utils.flop_counter import FlopCounterMode

    from vitune.bench.step import cpu_attention_flops

    q = torch.randn(2, 3, 5, 4, requires_grad=True)  # (batch, heads, tokens, head width)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        forward = counter.get_total_flops()
        out.sum().backward()
    assert forward == 2 * (2 * 2 * 3 * 5 * 5 * 4)  # q k^T and (softmax) v: 2 flops per multiply-add
    assert counter.get_total_flops() >= 3 * forward  # the backward's four products at least


def test_timing_processes_keep_a_warm_heap_and_memory_processes_hand_memory_back(monkeypatch):
    import os
    import subprocess

    from vitune.bench import fresh_process

    seen = []  # the allocator settings each measuring process is started with

    def fake_run(command, env, **kwargs):
        seen.append({k: env.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")})
        return subprocess.CompletedProcess(command, 0, stdout="{}\n", stderr="")

    for key in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(fresh_process.subprocess, "run", fake_run)
    fresh_process.run_fresh(TINY_SETTINGS, "lora", memory=False)
    fresh_process.run_fresh(TINY_SETTINGS, "lora", memory=True)
    fresh_process.run_fresh({**TINY_SETTINGS, "device": "cuda"}, "lora", memory=False)
    steady, peak, cuda = seen
    assert steady["MALLOC_MMAP_MAX_"] == "0" and int(steady["MALLOC_TRIM_THRESHOLD_"]) >= 2**40
    assert peak == {"MALLOC_MMAP_MAX_": None, "MALLOC_TRIM_THRESHOLD_": None, "MALLOC_MMAP_THRESHOLD_": "65536"}
    assert cuda == dict.fromkeys(cuda)  # CUDA's own caching allocator; the host's is left alone
    assert os.environ.get("MALLOC_MMAP_MAX_") is None  # the settings go to the child only


def test_default_is_quick_and_named_sets_expand():
    from vitune.bench import ALL_METHODS, DEFAULT_METHODS
    from vitune.bench.harness import variant_names

    assert variant_names(DEFAULT_METHODS, False) == ["full", "floor", "lora", "repadapter"]
    assert variant_names(["all"], False) == ["full", "floor", *ALL_METHODS]
    assert variant_names(["peers", "lora_qkv"], True)[:6] == [
        "full", "floor", "lora_qkv", "peft_lora_qkv", "repadapter", "repadapter_official"]
    assert variant_names(["peers"], True)[6:] == [n + "+ckpt" for n in variant_names(["peers"], False)]


def test_vitune_and_its_peer_are_paired_round_by_round():
    from vitune.bench.harness import _pairs

    rows = lambda steps, mib: [{"step_s": s, "peak_mib": mib} for s in steps]  # noqa: E731
    raw = {"repadapter": rows([1.0, 3.0, 2.0], 100.0), "repadapter_official": rows([2.0, 3.0, 1.0], 125.0),
           "lora_qkv": rows([1.0], 1.0)}  # no PEFT row: that pair is left out
    (pair,) = _pairs(raw)
    assert (pair["variant"], pair["peer"]) == ("repadapter", "repadapter_official")
    assert pair["step_vs_peer"] == {"median": 1.0, "min": 0.5, "max": 2.0, "rounds": 3}
    assert pair["memory_vs_peer"]["median"] == 0.8


def test_cpu_clock_times_the_process_s_cpu_time():
    import time

    from vitune.bench.harness import command_line
    from vitune.bench.step import BenchSettings, clock

    settings = BenchSettings(**{**TINY_SETTINGS, "clock": "cpu"})
    assert clock(settings) is time.process_time and clock(BenchSettings()) is time.perf_counter
    assert "--threads 1 --clock cpu" in command_line(settings, ["lora"], 1, False)
    result = measure({"settings": settings.to_dict(), "variant": "lora", "memory": False, "inference": True,
                      "storage": False})
    assert result["step_s"] > 0 and result["unmerged_img_s"] > 0
    with pytest.raises(VituneError, match="--clock is wall or cpu"):
        clock(BenchSettings(clock="gpu"))


def test_unknown_variant_is_refused_with_the_choices():
    with pytest.raises(VituneError, match="unknown method 'lorra'.*peft_lora_qkv"):
        parse_variant("lorra")
    assert parse_variant("lora+ckpt").checkpointing and parse_variant("lora+ckpt").base_name == "lora"


def test_bench_end_to_end_writes_the_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "bench.json"
    kwargs = [f"{k}={v}" for k, v in TINY_KWARGS.items()]
    code = cli.main(["bench", "--model-kwargs", *kwargs, "--batch-size", "2", "--methods", "lora", "--rounds", "1",
                     "--threads", "1", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| lora |" in printed and "| floor |" in printed
    document = json.loads(out.read_text())
    assert document["command"].startswith("vitune bench --model vit_tiny_patch16_224 --model-kwargs img_size=32")
    assert {"settings", "machine", "skipped", "variants", "pairs", "wall_s", "load_average_at_end",
            "rounds_done"} <= document.keys()
    assert document["rounds_done"] == 1
    assert [v["name"] for v in document["variants"]] == ["full", "floor", "lora"]
    lora = document["variants"][2]
    for key in ("trainable", "step_s", "peak_mib", "tensor_mib", "step_vs_full", "step_vs_floor", "memory_vs_full",
                "memory_vs_floor", "tensors_vs_full", "tensors_vs_floor", "unmerged_vs_plain", "merged_vs_plain",
                "plain_img_s", "merged_img_s", "merge_s",
                "adapter_bytes", "full_checkpoint_bytes", "storage_vs_full_checkpoint", "rounds", "step_flops",
                "flops_vs_floor", "flops_vs_full", "merged_flops_vs_plain", "unmerged_flops_vs_plain"):
        assert lora[key] is not None, key
    assert set(lora["step_vs_full"]) == {"median", "min", "max", "rounds"}
    assert document["variants"][0]["step_vs_full"]["median"] == 1.0
    assert 0 < lora["storage_vs_full_checkpoint"] < 1
    # Tensors: the peak above the RSS the libraries hold before the model is built (on this tiny model a few MiB).
    assert all(0 < v["tensor_mib"] < v["peak_mib"] for v in document["variants"])
    assert "| tensors MiB |" in printed and "| FLOPs x floor |" in printed
    assert lora["flops_vs_floor"]["rounds"] == 1 and 1 < lora["flops_vs_full"]["median"] ** -1 < 2
    assert lora["merged_flops_vs_plain"] == 1 < lora["unmerged_flops_vs_plain"]  # merged: the plain model's products
    plots = sorted(p.name for p in (tmp_path / "bench_plots").iterdir())
    assert plots == ["floor.png", "full.png", "lora.png"]
