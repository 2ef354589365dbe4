"""The public API's names and its errors on bad input."""

import pytest
import torch

import vitune
from helpers import make_backbone


def test_public_names():
    for name in ("apply", "methods", "is_mergeable", "count_parameters", "save_adapter", "load_adapter", "merge"):
        assert callable(getattr(vitune, name))
    assert {"lora", "bitfit", "linear", "full"} <= set(vitune.methods())
    assert vitune.methods() == sorted(vitune.methods())


def test_mergeable_flags():
    for name in ("lora", "bitfit", "linear", "full"):
        assert vitune.is_mergeable(name)


def test_unknown_method_names_it_and_suggests():
    with pytest.raises(vitune.UnknownMethodError, match=r"'lorra'.*did you mean 'lora'"):
        vitune.apply(make_backbone(), "lorra")
    with pytest.raises(vitune.UnknownMethodError, match="registered methods: .*lora"):
        vitune.is_mergeable("nope")


def test_unknown_config_key_names_it():
    with pytest.raises(vitune.ConfigError, match=r"unknown config key 'rank' for method 'lora'; valid keys: r, "):
        vitune.apply(make_backbone(), "lora", rank=4)
    with pytest.raises(vitune.ConfigError, match=r"'alhpa' for method 'lora' \(did you mean 'alpha'\?\)"):
        vitune.apply(make_backbone(), "lora", alhpa=4)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"r": "8"}, r"lora\.r must be an integer"),
        ({"r": 0}, r"r: must be positive"),
        ({"dropout": 1.5}, r"dropout: must be in \[0, 1\)"),
        ({"targets": ["q", "x"]}, r"unknown target role 'x'"),
        ({"pattern": "("}, r"not a valid regular expression"),
        ({"pattern": "nothing_here"}, r"matches no linear layer"),
    ],
)
def test_bad_config_values_name_the_key(config, message):
    with pytest.raises(vitune.ConfigError, match=message):
        vitune.apply(make_backbone(), "lora", **config)


def test_a_failed_apply_leaves_the_model_untouched():
    model = make_backbone()
    with pytest.raises(vitune.ConfigError):
        vitune.apply(model, "lora", pattern="nothing_here")
    assert all(p.requires_grad for p in model.parameters())
    assert vitune.count_parameters(model)["method"] == 0


def test_one_method_per_model():
    model = vitune.apply(make_backbone(), "lora")
    with pytest.raises(vitune.VituneError, match="already has method 'lora'"):
        vitune.apply(model, "bitfit")


def test_merge_without_method_is_an_error():
    with pytest.raises(vitune.VituneError, match="no vitune method is applied"):
        vitune.merge(make_backbone())


def test_unsupported_backbone():
    with pytest.raises(vitune.BackboneError, match="does not know where to attach in a .*Sequential"):
        vitune.apply(torch.nn.Sequential(torch.nn.Linear(4, 4)), "lora")


def test_count_parameters_plain_and_applied():
    model = make_backbone()
    total = sum(p.numel() for p in model.parameters())
    assert vitune.count_parameters(model) == {"method": 0, "head": 64 * 5 + 5, "trainable": total, "total": total}
    vitune.apply(model, "linear")
    assert vitune.count_parameters(model) == {"method": 0, "head": 325, "trainable": 325, "total": total}


def test_full_and_bitfit_counts_on_vit_b16():
    from helpers import vit_b16

    model = vitune.apply(vit_b16(num_classes=100), "full")
    counts = vitune.count_parameters(model)
    assert counts["method"] == 85_798_656  # ViT-B/16 without its head: the papers' 85.8M
    assert counts["trainable"] == counts["total"] == 85_798_656 + 76_900
    bitfit = vitune.count_parameters(vitune.apply(vit_b16(num_classes=0), "bitfit"))
    assert bitfit["method"] == 12 * (2304 + 768 + 3072 + 768) + 768  # linear + patch-embedding biases
    with_norms = vitune.count_parameters(vitune.apply(vit_b16(num_classes=0), "bitfit", norms=True))
    assert with_norms["method"] == bitfit["method"] + 12 * 2 * 768 + 768


def test_ddp_wrapper_rejected():
    model = make_backbone()
    with pytest.raises(vitune.VituneError, match="bare model"):
        vitune.apply(torch.nn.DataParallel(model), "lora")


def test_inserted_modules_follow_the_model_mode():
    model = vitune.apply(make_backbone().eval(), "lora", dropout=0.5)
    assert not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
