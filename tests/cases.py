"""Per-method settings for the registry-driven test grid (tests/test_contract.py).

Every registered method is tested; a method needs an entry here only when its defaults do not fit the
tiny 64-wide backbones or when a check must be told something about it.
"""

# Config overrides that make a method fit the tiny backbones.
TINY_CONFIGS: dict[str, dict] = {
    "consolidator": {"fc_groups": [16]},
    "kadaptation": {"n": 8},
}

# Methods whose stored form is a re-parameterisation (sums folded at save time): the reloaded model
# equals the saved one up to float rounding instead of bit for bit.
ROUNDTRIP_ATOL: dict[str, float] = {
    "consolidator": 1e-6,
}

# Methods whose math does not apply to a backbone family, with a phrase of the error they must raise there.
# The grid runs every other (method, backbone) pair; these pairs are checked to refuse, never skipped.
NOT_ON_BACKBONE: dict[tuple[str, str], str] = {
    ("vpt_shallow", "swin"): "does not apply to the timm_swin family: Swin's attention runs inside windows",
    ("vpt_deep", "swin"): "does not apply to the timm_swin family: Swin's attention runs inside windows",
}
