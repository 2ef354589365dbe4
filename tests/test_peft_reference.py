"""Hugging Face PEFT as an independent reference for vitune's LoRA: from the same tensors (PEFT's adapter loaded with
vitune.compat.peft), the two train alike step by step and merge to the same weights."""

import pytest
import torch

import vitune
from helpers import image_batch, make_backbone
from vitune.compat.peft import load_peft_lora

peft = pytest.importorskip("peft")  # a test dependency; skipped only where the test extra is missing


@pytest.mark.parametrize("target,r,alpha", [("qkv", 8, 8.0), ("fc1", 4, 16.0), ("proj", 2, 1.0)])
def test_lora_trains_and_merges_like_peft(target, r, alpha, tmp_path):
    reference = peft.get_peft_model(
        make_backbone(),  # a regular expression: a plain "proj" would also catch the patch embedding's conv
        peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=rf"blocks\.\d+\.\w+\.{target}", lora_dropout=0.0,
                        modules_to_save=["head"]),
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-zero B: PEFT starts B at zero, which would prove little
        for name, p in reference.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    reference.save_pretrained(tmp_path)
    ours = load_peft_lora(make_backbone(), tmp_path)

    x = image_batch(ours, n=8)
    y = torch.arange(8) % 5
    for model in (reference, ours):
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(10):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
        merged_reference = reference.merge_and_unload()
        vitune.merge(ours)
        torch.testing.assert_close(ours(x), merged_reference(x), rtol=0, atol=1e-5)
    theirs = merged_reference.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=1e-5)
