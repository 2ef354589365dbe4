"""The ``vitune`` command. With no arguments it runs the offline demo job."""

from __future__ import annotations

import argparse
import json
import sys

from . import api, demo
from .errors import VituneError


def _parse_value(text: str):
    """Config values on the command line are JSON when they parse as JSON (numbers, lists, true), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _config_pairs(pairs: list[str]) -> dict:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VituneError(f"--set expects KEY=VALUE, got {pair!r}")
        config[key] = _parse_value(value)
    return config


def _vit_b16_count(method: str) -> int:
    """The method's parameter count with its default config on ViT-B/16, built on the meta device (shapes only)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", pretrained=False)
        return api.count_parameters(api.apply(model, method))["method"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitune", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    d = sub.add_parser("demo", help="tiny offline end-to-end run: apply, train, save, load, merge, compare")
    d.add_argument("--method", default="lora", help="method name (see `vitune methods`)")
    d.add_argument("--steps", type=int, default=100, help="training steps")
    d.add_argument("--out", default="runs/demo", help="folder for the adapter files")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method config, e.g. r=4")

    sub.add_parser("methods", help="list the registered methods: mergeable or not, parameters on ViT-B/16")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "methods":
            print(f"{'method':17s} {'mergeable':10s} {'ViT-B/16 parameters (head excluded)':>36s}")
            for name in api.methods():
                merge = "yes" if api.is_mergeable(name) else "no"
                print(f"{name:17s} {merge:10s} {_vit_b16_count(name):36,d}")
            return 0
        if args.command is None:  # the zero-argument default job
            args = build_parser().parse_args(["demo"])
        result = demo.run(args.method, args.steps, args.out, args.seed, **_config_pairs(args.set))
        print(demo.report(result, args.method))
        ok = demo.passed(result)
        print("OK: the reloaded and merged models give the same outputs" if ok else "FAILED: outputs differ")
        return 0 if ok else 1
    except VituneError as e:
        print(f"vitune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
