"""Consolidator's README conversion snippet, run as written with only the import line changed."""

import pytest
import torch
import torch.nn.functional as F

from vitune.compat.consolidator import Consolidator


def readme_verification(m, weight, bias):
    # The README's "You can verify the result by" block, verbatim.
    import torch
    import torch.nn.functional as F
    x = torch.randn(64, 197, 768)
    m.eval()
    out1 = m(x)
    out2 = F.linear(x, weight, bias)
    print('Difference:')
    print(((out2 - out1) ** 2).sum())
    return ((out2 - out1) ** 2).sum(), out1, x


def test_readme_conversion_snippet():
    torch.manual_seed(0)
    # The README's conversion block, verbatim.
    m = Consolidator(768, 768, fc_groups=(384,), rep_drop=0.5, with_channel_shuffle=True)
    weight, bias = m.get_actual_params()
    difference, _, _ = readme_verification(m, weight, bias)
    assert difference < 1e-6

    # Again with trained-looking branches, far from their 1e-3 init, so the check is not trivially passed.
    with torch.no_grad():
        for branch in m.branches:
            branch.weight.normal_(0, 0.05)
            branch.bias.normal_(0, 0.05)
    weight, bias = m.get_actual_params()
    difference, out1, x = readme_verification(m, weight, bias)
    assert difference < 1e-6
    assert ((out1 - F.linear(x, m.base_layer.weight, m.base_layer.bias)) ** 2).sum() > 1.0


def test_several_branches_and_no_shuffle():
    m = Consolidator(64, 192, fc_groups=(16, 4), rep_drop=0.2).eval()
    weight, bias = m.get_actual_params()
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(m(x), F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
    assert weight.shape == (192, 64) and bias.shape == (192,)


def test_official_argument_checks():
    with pytest.raises(NotImplementedError, match="droppath"):
        Consolidator(64, 64, drop_type="dropout")
    with pytest.raises(ValueError, match="fc_groups: 384 groups do not divide 64"):
        Consolidator(64, 64)
