"""RepAdapter's README usage example, run as written with only the import line changed."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import image_batch, make_backbone, vit_b16


def _train_a_little(model, trainable):
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for step in range(3):
        x = image_batch(model, seed=step)
        loss = F.cross_entropy(model(x), torch.arange(len(x)) % 5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_readme_usage_example(tmp_path):
    model = make_backbone()
    output_dir = str(tmp_path)

    # 1. Import repadapter.py from module
    from vitune.compat.repadapter import set_repadapter, save_repadapter, load_repadapter
    from vitune.compat.repadapter import merge_repadapter

    # 2. Insert RepAdapter layers into all linear layers in the model
    set_repadapter(model=model)

    # 3. Set the requires_grad attribute of the model parameters.
    trainable = []
    for n, p in model.named_parameters():
        if any([x in n for x in ['repadapter']]):
            trainable.append(p)
            p.requires_grad = True
        else:
            p.requires_grad = False

    # The README's filter now selects exactly the adapters: 4 per block (qkv, proj, fc1, fc2), 4 tensors each.
    assert len(trainable) == 2 * 4 * 4
    _train_a_little(model, trainable)
    x = image_batch(model)
    with torch.no_grad():
        trained = model(x)

    # 4. Save the checkpoint of RepAdapter
    save_repadapter(os.path.join(output_dir, "final.pt"), model=model)
    load_path = os.path.join(output_dir, "final.pt")
    adapter_bytes = os.path.getsize(load_path)
    model_bytes = sum(p.numel() * 4 for p in make_backbone().parameters())
    assert adapter_bytes < 0.5 * model_bytes

    # 5. Load the checkpoint of RepAdapter (into a fresh model, after set_repadapter)
    model = make_backbone()
    head = model.head.state_dict()
    set_repadapter(model=model)
    load_repadapter(load_path, model=model)
    model.head.load_state_dict(head)  # the README's helpers do not save the head
    assert not model.training and not any(m.training for m in model.modules())  # adapters follow the model
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained, rtol=0, atol=0)

    # 6. Reparameterize the model
    merge_repadapter(model, load_path=None, has_loaded=False)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if isinstance(m, nn.Linear))
    assert list(model.state_dict()) == list(make_backbone().state_dict())
    with torch.no_grad():
        assert (model(x) - trained).abs().max() <= 1e-4


def test_merge_from_a_file(tmp_path):
    from vitune.compat.repadapter import merge_repadapter, save_repadapter, set_repadapter

    model = make_backbone()
    set_repadapter(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "repadapter" in n:
                p.normal_(0, 0.1)
    x = image_batch(model)
    with torch.no_grad():
        adapted = model.eval()(x)
    save_repadapter(tmp_path / "a.pt", model)

    fresh = make_backbone()
    merge_repadapter(fresh, load_path=tmp_path / "a.pt")
    assert not any("repadapter" in n for n, _ in fresh.named_parameters())
    with torch.no_grad():
        assert (fresh(x) - adapted).abs().max() <= 1e-4


def test_pattern_uses_match_and_wrapping_twice_is_harmless():
    from vitune.compat.repadapter import set_repadapter

    model = make_backbone()
    assert set_repadapter(model, pattern=r"blocks\.\d+\.attn\.qkv") == 2
    assert set_repadapter(model, pattern=r"attn\.qkv") == 0  # match is anchored at the start
    assert set_repadapter(model) == 6  # the other linears; the wrapped ones and the head are skipped


def test_official_count_on_vit_b16():
    """The README helpers wrap all 48 linears of ViT-B: 839,040 adapter parameters (the official RepAdapter
    repadapter.py at commit d2c7c48: 9,992 each on qkv, proj, fc1; 39,944 on the 3072-wide fc2; x 12)."""
    from vitune.compat.repadapter import set_repadapter

    model = vit_b16()
    assert set_repadapter(model) == 48
    assert sum(p.numel() for n, p in model.named_parameters() if "repadapter" in n) == 839_040


def test_clear_errors(tmp_path):
    from vitune import AdapterFileError
    from vitune.compat.repadapter import load_repadapter, save_repadapter, set_repadapter

    model = make_backbone()
    with pytest.raises(ValueError, match="call set_repadapter"):
        save_repadapter(tmp_path / "a.pt", model)
    set_repadapter(model)
    save_repadapter(tmp_path / "a.pt", model)
    other = make_backbone()
    set_repadapter(other, pattern=r"blocks\.0\.")
    set_repadapter(other, pattern=r"blocks\.1\.attn")
    set_repadapter(other)
    load_repadapter(tmp_path / "a.pt", other)  # same layers, wrapped in another order: loads
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(AdapterFileError, match="bad.pt: not a readable RepAdapter file"):
        load_repadapter(tmp_path / "bad.pt", other)
