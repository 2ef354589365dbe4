"""The README's training-cost table: ``vitune bench`` on ViT-B/16, batch 8, 224 px (this script only sets
those defaults; every other flag goes through to ``vitune bench``, see docs/benchmarks.md).

    python benchmarks/train_step.py                          # ViT-B/16, batch 8, 224 px, CPU, 3 rounds
    python benchmarks/train_step.py --methods lora,repadapter --device cuda --batch-size 32
"""

from __future__ import annotations

import sys

from vitune.cli import main

DEFAULTS = {"--model": "vit_base_patch16_224", "--batch-size": "8", "--img-size": "224"}


def with_defaults(argv: list[str]) -> list[str]:
    """`argv` after ``bench``, with each default flag the caller did not give."""
    given = {arg.split("=", 1)[0] for arg in argv}
    extra = [item for flag, value in DEFAULTS.items() if flag not in given for item in (flag, value)]
    return ["bench", *extra, *argv]


if __name__ == "__main__":
    sys.exit(main(with_defaults(sys.argv[1:])))
