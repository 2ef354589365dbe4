"""Hugging Face PEFT as an independent reference for vitune's LoRA: same tensors, same model."""

import pytest
import torch

import vitune
from helpers import image_batch, make_backbone

peft = pytest.importorskip("peft")  # a test dependency; skipped only where the test extra is missing


@pytest.mark.parametrize("target,r,alpha", [("qkv", 8, 8.0), ("fc1", 4, 16.0), ("proj", 2, 1.0)])
def test_lora_matches_peft_unmerged_and_merged(target, r, alpha):
    x = image_batch(make_backbone())
    reference = peft.get_peft_model(
        make_backbone(),  # a regular expression: a plain "proj" would also catch the patch embedding's conv
        peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=rf"blocks\.\d+\.\w+\.{target}", lora_dropout=0.0),
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-zero B: PEFT starts B at zero, which would prove nothing
        for name, p in reference.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    ours = vitune.apply(make_backbone(), "lora", r=r, alpha=alpha, pattern=rf"\.{target}$")
    peft_tensors = dict(reference.named_parameters())
    with torch.no_grad():
        for name, module in ours.named_modules():
            if hasattr(module, "lora_A"):
                prefix = f"base_model.model.{name}"
                module.lora_A.copy_(peft_tensors[f"{prefix}.lora_A.default.weight"])
                module.lora_B.copy_(peft_tensors[f"{prefix}.lora_B.default.weight"].unsqueeze(0))
    reference.eval(), ours.eval()
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-6)
        merged_reference = reference.merge_and_unload()
        vitune.merge(ours)
        torch.testing.assert_close(ours(x), merged_reference(x), rtol=0, atol=1e-5)
    theirs = merged_reference.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=1e-6)
