"""Training: ``vitune train`` (runner.py), ``vitune eval`` and ``vitune merge`` (reuse.py).

One idea per file: config.py (defaults < recipe < flags), build.py (model and transforms), loop.py (an epoch),
optim.py (timm's optimizer, schedule, loss), evaluate.py, checkpoint.py, run_folder.py, distributed.py
(torchrun + DDP), iterative.py (AdaptFormer's layer-wise rounds), seeding.py, precision.py, resources.py. Recipes:
``recipes/*.yaml``.
"""

from .config import RunConfig, builtin_recipes, load_recipe, resolve_config
from .reuse import evaluate_folder, merge_folder
from .runner import Outcome, train

__all__ = [
    "Outcome", "RunConfig", "builtin_recipes", "evaluate_folder", "load_recipe", "merge_folder", "resolve_config",
    "train",
]
