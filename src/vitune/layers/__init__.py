"""The modules vitune inserts into backbones, and their math.

Where a class lives, one rule: every ``nn.Module`` class that vitune inserts into a backbone -- with its
forward, its init and its merge rule -- lives here, one file per idea (``lora.py``, ``repadapter.py``,
``branch_adapters.py`` ...). A file in ``methods/`` holds only a method's Config, its placement (``inject``:
which of these modules go where, found through the backbone's places), what it trains, and method-level
helpers (AdaptFormer's ``select_adapter``). ``base.py`` is the core: :class:`VituneModule`, the base of every
inserted module, and :class:`SharedTensors`. This package never imports ``vitune.methods``.
"""

from .base import SharedTensors, VituneModule
from .wrapped_linear import WrappedLinear, WrappedModule

__all__ = ["SharedTensors", "VituneModule", "WrappedLinear", "WrappedModule"]
