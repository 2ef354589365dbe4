"""``vitune`` with no arguments: the quickstart job (job.py), its flags and its printed report."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..errors import VituneError, exit_code
from .job import DEFAULT_METHODS, Settings, run
from .report import describe, text_table, verdict

_DEFAULTS = Settings()


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _method_config(pairs: list[str]) -> dict[str, dict]:
    """``METHOD.KEY=VALUE`` pairs -> ``{method: {key: value}}`` (values parsed as JSON when they parse)."""
    config: dict[str, dict] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        method, dot, key = target.partition(".")
        if not (sep and dot and method and key):
            raise VituneError(f"--set expects METHOD.KEY=VALUE (e.g. lora.r=4), got {pair!r}")
        config.setdefault(method, {})[key] = _parse_value(value)
    return config


def _methods(values: list[str]) -> tuple[str, ...]:
    return tuple(name for value in values for name in value.split(",") if name)


def build_parser(prog: str = "vitune") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="The quickstart job: train a linear probe and adapters on a pretrained DINOv2 ViT-S/14 and "
        "real Fashion-MNIST images (both embedded, offline), merge each adapter and check it, and report "
        "accuracy, parameters, file size, training time and inference speed (docs/quickstart.md).",
    )
    p.add_argument("--out", default=_DEFAULTS.out, help=f"output folder (default {_DEFAULTS.out})")
    p.add_argument("--methods", nargs="+", default=[",".join(DEFAULT_METHODS)], metavar="NAME",
                   help=f"methods to train, comma- or space-separated (default {','.join(DEFAULT_METHODS)}); "
                   "see `vitune methods`")
    p.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help=f"epochs per method ({_DEFAULTS.epochs})")
    p.add_argument("--img-size", type=int, default=_DEFAULTS.img_size, help=f"input size ({_DEFAULTS.img_size})")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help=f"({_DEFAULTS.batch_size})")
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr,
                   help=f"AdamW learning rate of the adapters ({_DEFAULTS.lr:g})")
    p.add_argument("--linear-lr", type=float, default=_DEFAULTS.linear_lr,
                   help=f"AdamW learning rate of the linear probe ({_DEFAULTS.linear_lr:g})")
    p.add_argument("--train-per-class", type=int, metavar="N",
                   help="training images per class, at most 300 (default: all 300)")
    p.add_argument("--test-per-class", type=int, metavar="N",
                   help="test images per class, at most 100 (default: all 100)")
    p.add_argument("--model", default=_DEFAULTS.model,
                   help=f"backbone: {_DEFAULTS.model} (embedded, pretrained) or a timm name (random init)")
    p.add_argument("--set", nargs="*", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method's config, e.g. lora.r=4 repadapter.scale=0.5")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help=f"({_DEFAULTS.seed})")
    p.add_argument("-j", "--workers", type=int, default=_DEFAULTS.workers,
                   help=f"data loading processes ({_DEFAULTS.workers}: in the training process)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=_DEFAULTS.device)
    p.add_argument("--fresh", action="store_true",
                   help="train again even where the output folder holds finished runs with the same settings")
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"vitune: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Run the job with command-line flags; 0 when every merge check passed, 1 when one failed, else the
    error's exit code (docs/errors.md)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            result = run(
                args.out, _methods(args.methods), epochs=args.epochs, img_size=args.img_size,
                batch_size=args.batch_size, lr=args.lr, linear_lr=args.linear_lr,
                train_per_class=args.train_per_class, test_per_class=args.test_per_class, model=args.model,
                method_config=_method_config(args.set), seed=args.seed, workers=args.workers, device=args.device,
                fresh=args.fresh,
            )
    except VituneError as e:
        print(f"vitune: error: {e}", file=sys.stderr)
        return exit_code(e)  # the kinds of docs/errors.md: 2 config, 3 data, 4 files, 5 the run failed
    print()
    print(text_table(result.rows))
    print()
    print(describe(result.summary))
    for line in verdict(result.summary):
        print(line)
    written = ", ".join(p.name for p in result.files.values())
    print(f"written to {result.folder}: {written}")
    if not result.merges_ok:
        print("FAILED: a merged model's logits differ from the unmerged model's", file=sys.stderr)
        return 1
    return 0
