"""The ``vitune`` command. With no arguments it runs the quickstart job (docs/quickstart.md).

    vitune [quickstart [--methods a,b ...]]   adapters on the embedded DINOv2 ViT-S/14 and Fashion-MNIST, offline

    vitune train --method NAME --model TIMM_NAME --data DIR --out RUN_DIR [...]   (docs/training.md)
    vitune eval RUN_DIR_OR_ADAPTER_DIR [--data DIR] [--split NAME] [--json]
    vitune merge RUN_DIR_OR_ADAPTER_DIR --out FOLDER
    vitune methods | vitune demo
    vitune recipes | search RUN_ROOT --grid KEY=V1,V2 ... | suite RUN_ROOT --benchmark DIR ... | report RUN_ROOT...
    vitune bench [--model NAME] [--batch-size N] [--methods a,b,...] [--rounds N] [--json FILE]   (docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from . import api, demo
from .errors import VituneError, exit_code
from .methods import list_methods


def _parse_value(text: str):
    """Config values on the command line are JSON when they parse as JSON (numbers, lists, true), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _config_pairs(pairs: list[str], flag: str = "--set") -> dict:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VituneError(f"{flag} expects KEY=VALUE, got {pair!r}")
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
    parser = argparse.ArgumentParser(
        prog="vitune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")

    # Listed for --help; `vitune quickstart ...` is handed to the job's own parser before this one runs.
    sub.add_parser("quickstart", add_help=False,
                   help="the default job (no arguments): adapters vs a linear probe on the embedded pretrained "
                   "DINOv2 ViT-S/14 and real Fashion-MNIST images, merged and checked (vitune quickstart --help)")
    d = sub.add_parser("demo", help="tiny offline end-to-end run: apply, train, save, load, merge, compare")
    d.add_argument("--method", default="lora", help="method name (see `vitune methods`)")
    d.add_argument("--steps", type=int, default=100, help="training steps")
    d.add_argument("--out", default="runs/demo", help="folder for the adapter files")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method config, e.g. r=4")

    sub.add_parser("methods", help="list the registered methods: mergeable or not, parameters on ViT-B/16")
    _add_train_parser(sub)
    _add_experiment_parsers(sub)
    _add_bench_parser(sub)
    e = sub.add_parser("eval", help="top-1 accuracy of a trained adapter (run folder or adapter folder)")
    e.add_argument("folder", metavar="RUN_DIR_OR_ADAPTER_DIR")
    e.add_argument("--data", metavar="DIR", help="dataset folder (default: the run's)")
    e.add_argument("--split", metavar="NAME", help="split to evaluate (default: the run's eval split)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    m = sub.add_parser("merge", help="merge a trained adapter into its backbone; write a timm local-dir folder "
                       "(a transformers save_pretrained folder for an hf: model)")
    m.add_argument("folder", metavar="RUN_DIR_OR_ADAPTER_DIR")
    m.add_argument("--out", required=True, metavar="FOLDER", help="new folder: config.json + model.safetensors")
    return parser


# `vitune train` flags whose destination is not the RunConfig key of the same name.
_TRAIN_RENAMES = {"set": "method_config"}


def _add_train_parser(sub) -> None:
    """`vitune train`: flags default to "not given", so a recipe's values stand unless a flag overrides them."""
    t = sub.add_parser(
        "train", argument_default=argparse.SUPPRESS,
        help="train a method on a dataset folder into a run folder (docs/training.md)",
        description="Train a method on a dataset folder. Settings: defaults < --recipe < these flags.",
    )
    _add_train_flags(t)
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (new or empty, or with --resume)")
    t.add_argument("--resume", action="store_true", default=False, help="continue the run in --out from its checkpoint")


def _add_train_flags(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """The run settings of `vitune train`, shared by `vitune search` and `vitune suite` (minus the flags in `skip`)."""

    def add(*names: str, **kwargs) -> None:
        if not skip.intersection(names):
            parser.add_argument(*names, **kwargs)

    add("--method", help="method name (vitune methods)")
    add("--set", nargs="*", metavar="KEY=VALUE", help="the method's config, e.g. r=4 (values parsed as JSON)")
    add("--model", metavar="TIMM_NAME", help="timm model name, e.g. vit_base_patch16_224.orig_in21k, or hf:FOLDER "
        "(a local Hugging Face save_pretrained folder)")
    add("--model-kwargs", nargs="*", metavar="KEY=VALUE", help="keyword arguments for timm.create_model")
    add("--pretrained", action="store_true", help="timm's own weights for the model (cached or downloaded)")
    add("--weights", metavar="PATH", help="local weights file for the backbone (safetensors, .pth, .npz)")
    add("--data", metavar="DIR", help="dataset folder: VTAB-1k, FGVC or image folder (docs/data.md)")
    add("--train-split", metavar="NAME", help="training split (default: the layout's)")
    add("--eval-split", metavar="NAME", help="evaluation split (default: the layout's)")
    add("--few-shot", nargs=2, type=int, metavar=("K", "SEED"), help="NOAH few-shot list num_shot_K.seed_SEED")
    add("--k-shot", nargs=2, type=int, metavar=("K", "SEED"),
        help="ELEVATER-style: K images per class drawn from the training split with SEED (listed in the run's "
             "config.yaml); splits kshot, kshot_train, kshot_val")
    add("--epochs", type=int, help="epochs (default 100)")
    add("--batch-size", type=int, help="batch size per process (default 64)")
    add("--validation-batch-size", type=int, help="evaluation batch size (default: --batch-size)")
    add("--lr", type=float, help="learning rate (default 1e-3)")
    add("--weight-decay", type=float, help="weight decay (default 1e-4)")
    add("--opt", help="timm optimizer name (default adamw)")
    add("--opt-eps", type=float, help="optimizer epsilon")
    add("--momentum", type=float, help="momentum of SGD-like optimizers (default 0.9)")
    add("--sched", help="timm schedule name (default cosine; none = constant)")
    add("--warmup-epochs", type=int, help="linear warm-up epochs (default 10)")
    add("--warmup-lr", type=float, help="learning rate at the warm-up's start (default 1e-6)")
    add("--min-lr", type=float, help="lowest learning rate of the schedule (default 1e-5)")
    add("--sched-on-updates", action="store_true", help="update the learning rate every step, not every epoch")
    add("--smoothing", type=float, help="label smoothing (default 0)")
    add("--drop-path", type=float, help="stochastic depth rate of the backbone (default 0)")
    add("--clip-grad", type=float, help="clip gradients at this norm (default: off)")
    add("--clip-mode", choices=["norm", "value", "agc"], help="gradient clipping mode (default norm)")
    add("--amp", action="store_true", help="mixed precision: float16 on CUDA, bfloat16 on the CPU")
    add("--grad-checkpointing", action="store_true", help="activation checkpointing: less memory, more time")
    add("--grad-accum-steps", type=int, help="micro-batches per optimizer step (default 1)")
    add("--img-size", type=int, help="input size (default: the model's)")
    add("--normalize", choices=["imagenet", "inception", "model", "none"], help="normalisation (default imagenet)")
    add("--head", choices=["linear", "bn"], help="bn: BatchNorm1d(affine=False) before the linear head")
    add("--rounds", type=int, help="rounds of layer-wise iterative training (adaptformer adpnum_option=multi)")
    add("--eval-interval", type=int, help="also evaluate every N epochs (default 0: only after the last)")
    add("--selection", choices=["final_epoch", "best_eval"],
        help="final_epoch (default), or best_eval: the epoch with the best eval-split accuracy, marked as such")
    add("--recipe", metavar="NAME_OR_YAML", help="published settings: a built-in recipe name or a YAML file")
    add("--seed", type=int, help="seed of the init, the data order and every epoch (default 42)")
    add("--device", choices=["auto", "cpu", "cuda"], help="where to train (default auto)")
    add("-j", "--workers", type=int, help="data loading processes (default 4)")


def _add_experiment_parsers(sub) -> None:
    """`vitune recipes`, `search`, `suite` and `report` (docs/benchmarks-vtab.md)."""
    sub.add_parser("recipes", help="list the built-in recipes: method, benchmark and source")
    s = sub.add_parser(
        "search", argument_default=argparse.SUPPRESS,
        help="hyper-parameter search: train on train800, select on val200, retrain on train800val200, test once",
        description="Train every point of the search on the train split, select on the validation split, retrain "
                    "the winner on train+val and test it once; RUN_ROOT/search.json records it all. Without "
                    "--grid or --strategy, the recipe's published search is used.",
    )
    s.add_argument("root", metavar="RUN_ROOT", help="the search's folder (re-run the same command to continue)")
    _add_search_flags(s)
    _add_train_flags(s, skip=frozenset({"--train-split", "--eval-split", "--selection"}))
    u = sub.add_parser(
        "suite", argument_default=argparse.SUPPRESS,
        help="one method over every task of a benchmark folder, one run per task and seed",
        description="Train a method on every task folder of --benchmark (RUN_ROOT/<task>/seed<S>); finished runs "
                    "are skipped and unfinished ones resumed.",
    )
    u.add_argument("root", metavar="RUN_ROOT", help="the suite's folder")
    u.add_argument("--benchmark", required=True, metavar="DIR", help="folder of task folders (VTAB-1k, FGVC, few-shot)")
    u.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="one run per seed and task (default: the recipe's seed, else 42)")
    u.add_argument("--tasks", metavar="A,B,...", help="only these task folders (default: all)")
    u.add_argument("--workers", type=int, default=0, metavar="N",
                   help="N worker processes, one task each at a time (default 0: in this process)")
    u.add_argument("--loader-workers", dest="workers_per_run", type=int, metavar="N",
                   help="data loading processes of each run (vitune train's -j/--workers; default 4)")
    u.add_argument("--few-shot", dest="few_shot_shots", type=int, metavar="K",
                   help="NOAH's K-shot lists: list num_shot_K.seed_S for seed S")
    u.add_argument("--k-shot", dest="k_shot_shots", type=int, metavar="K",
                   help="ELEVATER-style: K images per class drawn from each task's training split with seed S")
    u.add_argument("--search", dest="search_recipe", action="store_true",
                   help="search every task and seed with the recipe's published search (as vitune search does)")
    _add_search_flags(u, suite=True)
    _add_train_flags(u, skip=frozenset({"--data", "--seed", "--workers", "--few-shot", "--k-shot"}))
    r = sub.add_parser("report", help="tables and plots from run folders: report.md, report.csv, PNGs")
    r.add_argument("roots", nargs="+", metavar="RUN_ROOT", help="folders searched for results.json")
    r.add_argument("--out", metavar="DIR", help="where to write the report (default: the first RUN_ROOT)")


def _add_search_flags(parser: argparse.ArgumentParser, suite: bool = False) -> None:
    """The flags of `vitune search` that choose the points; in `vitune suite` they make every task a search."""
    each = " (every task and seed is then a vitune search)" if suite else ""
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a run setting (lr, weight_decay, ...) or method.KEY (method.scale) and its values; "
                             "repeat" + each)
    parser.add_argument("--strategy", choices=["grid", "pevit"],
                        help="grid: every combination of --grid; pevit: PEViT's lr decades x weight-decay "
                             "bisection (--grid lr=... replaces its learning rates)" + each)
    parser.add_argument("--point-epochs", type=int, metavar="N",
                        help="epochs of every point (default: --epochs; pevit: 10); the final run trains --epochs")
    parser.add_argument("--pevit-wd-grid", metavar="LOW,HIGH,POINTS,COARSE",
                        help="pevit's weight decays: POINTS log-spaced in 1eLOW..1eHIGH, bisected from COARSE of "
                             "them (default -6,6,97,7)")


def _add_bench_parser(sub) -> None:
    """`vitune bench` (docs/benchmarks.md)."""
    from .bench import DEFAULT_METHODS

    b = sub.add_parser("bench", help="training step time and memory per method vs full fine-tuning and the "
                                     "backprop floor; inference unmerged/merged; stored bytes; merge time")
    b.add_argument("--model", default="vit_tiny_patch16_224", metavar="TIMM_NAME",
                   help="timm model (default vit_tiny_patch16_224; vit_base_patch16_224 for ViT-B/16)")
    b.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="for timm.create_model")
    b.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    b.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    b.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="A,B,...",
                   help="variants besides full and floor: vitune methods, lora_qkv, peft_lora_qkv, "
                        "repadapter_official; NAME+ckpt with activation checkpointing; the sets all (every seed "
                        "method and the peers) and peers (default: %(default)s)")
    b.add_argument("--rounds", type=int, default=3, help="rounds; every variant runs once per round (default 3)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps per measuring process (default 2)")
    b.add_argument("--steps", type=int, default=2, help="timed steps per measuring process (default 2)")
    b.add_argument("--threads", type=int, default=None, help="torch threads per measuring process")
    b.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or the process's CPU time, which other jobs on a shared machine do not "
                        "lengthen (with --threads 1: the work alone; CUDA always wall) (default wall)")
    b.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    b.add_argument("--grad-checkpointing", action="store_true",
                   help="also measure every variant with timm's activation checkpointing (NAME+ckpt)")
    b.add_argument("--json", metavar="FILE", help="write the whole document (every round's figures) here")
    b.add_argument("--plots", metavar="DIR", help="one PNG per variant (default: FILE's stem + _plots with --json)")


def _run_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .atomic import atomic_write_text
    from .bench import BenchSettings, format_table, run_bench
    from .bench.plot import write_plots

    settings = BenchSettings(model=args.model, model_kwargs=_config_pairs(args.model_kwargs, "--model-kwargs"),
                             batch_size=args.batch_size, img_size=args.img_size, device=args.device,
                             warmup=args.warmup, steps=args.steps, threads=args.threads, clock=args.clock)

    def write_json(document: dict) -> None:  # after every round: an interrupted run keeps its finished rounds
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(document, indent=2) + "\n")  # a kill leaves the last round

    document = run_bench(settings, _split_list(args.methods, "--methods"), args.rounds, args.grad_checkpointing,
                         progress=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True), round_done=write_json)
    print(format_table(document))
    plots = args.plots or (str(Path(args.json).with_suffix("")) + "_plots" if args.json else None)
    if plots:
        print(f"plots: {len(write_plots(document, plots))} PNGs in {plots}")
    return 0


def _run_recipes(args: argparse.Namespace) -> int:
    from .train.recipes import recipe_rows

    rows = recipe_rows()
    print(f"{'recipe':28s} {'method':16s} {'benchmark':10s} {'per-dataset':>11s}  source")
    for row in rows:
        print(f"{row.name:28s} {row.method:16s} {row.benchmark:10s} {row.datasets:11d}  {row.source}")
    return 0


def _split_list(text: str, flag: str, kind=str) -> list:
    try:
        items = [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise VituneError(f"{flag} expects a comma-separated list, got {text!r}") from None
    if not items:
        raise VituneError(f"{flag} expects a comma-separated list, got {text!r}")
    return items


# The destinations of _add_search_flags: how the points are chosen, not run settings.
_SEARCH_DESTS = ("grid", "strategy", "point_epochs", "pevit_wd_grid")


def _search_settings(args: argparse.Namespace) -> dict:
    """run_search's keyword arguments from the search flags (grid None: the strategy's or the recipe's)."""
    from .train.search import parse_grid
    from .train.search_pevit import WeightDecayGrid

    wd = getattr(args, "pevit_wd_grid", None)
    return {"grid": parse_grid(args.grid, _parse_value) if args.grid else None,
            "strategy": getattr(args, "strategy", None), "point_epochs": getattr(args, "point_epochs", None),
            "wd_grid": WeightDecayGrid.parse(wd) if wd is not None else None}


def _run_search(args: argparse.Namespace) -> int:
    from .train.search import run_search

    settings = _search_settings(args)
    flags = _train_flags(args, extra=("root", *_SEARCH_DESTS))
    document = run_search(args.root, settings.pop("grid"), flags, progress=lambda m: print(f"search: {m}", flush=True),
                          **settings)
    choice, final = document["choice"], document["final"]
    chosen = ", ".join(f"{k}={v}" for k, v in choice["values"].items())
    print(f"search {args.root}: chose {chosen} (validation {choice['val_accuracy']:.2f}% on "
          f"{document['splits']['val']}); test accuracy {final['test_accuracy']:.2f}% on {final['eval_split']} "
          f"after retraining on {final['train_split']}")
    return 0


def _run_suite(args: argparse.Namespace) -> int:
    from .train.suite import run_suite, summary_error
    from .train.suite_jobs import SearchJob

    flags = _train_flags(args, extra=("root", "benchmark", "seeds", "tasks", "workers", "workers_per_run",
                                      "few_shot_shots", "k_shot_shots", "search_recipe", *_SEARCH_DESTS))
    if getattr(args, "workers_per_run", None) is not None:
        flags["workers"] = args.workers_per_run
    seeds = _split_list(args.seeds, "--seeds", int) if args.seeds else None
    tasks = _split_list(args.tasks, "--tasks") if getattr(args, "tasks", None) else None
    settings = _search_settings(args)
    searching = getattr(args, "search_recipe", False) or any(v is not None for v in settings.values())
    document = run_suite(args.root, args.benchmark, flags, seeds=seeds, tasks=tasks, workers=args.workers,
                         few_shot_shots=getattr(args, "few_shot_shots", None),
                         k_shot_shots=getattr(args, "k_shot_shots", None),
                         search=SearchJob(**settings) if searching else None,
                         progress=lambda m: print(f"suite: {m}", flush=True))
    done = sum(r["status"] in ("finished", "trained") for r in document["runs"])
    print(f"suite {args.root}: {done}/{len(document['runs'])} runs finished ({document['kind']}, "
          f"{len(document['tasks'])} tasks x {len(document['seeds'])} seeds)")
    error = summary_error(document)
    if error is not None:
        raise error
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from .report import write_report

    written = write_report(args.roots, args.out)
    print(f"report of {written.runs} runs written to {written.folder}: " + ", ".join(p.name for p in written.files))
    return 0


def _train_flags(args: argparse.Namespace, extra: tuple[str, ...] = ()) -> dict:
    """The settings given on the command line, as RunConfig keys."""
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "out", "resume", *extra)}
    if "set" in flags:
        flags["set"] = _config_pairs(flags["set"])
    if "model_kwargs" in flags:
        flags["model_kwargs"] = _config_pairs(flags["model_kwargs"], "--model-kwargs")
    return {_TRAIN_RENAMES.get(k, k): v for k, v in flags.items()}


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _run_train(args: argparse.Namespace) -> int:
    from .train import train

    outcome = train(_train_flags(args), args.out, resume=args.resume)
    if not _is_rank0():
        return 0
    r = outcome.results
    where = f"{r['dataset']}/{r['eval_split']}"
    if outcome.already_finished:
        print(f"run {outcome.folder} already finished (accuracy {r['accuracy']:.2f}% on {where}); nothing to do")
        return 0
    selected = "final epoch" if r["selection"] == "final_epoch" else f"best epoch {r['selected_epoch'] + 1} on {where}"
    print(
        f"run {outcome.folder}: accuracy {r['accuracy']:.2f}% on {where} ({selected}); "
        f"{r['counts']['trainable']:,} trainable parameters, adapter {r['adapter_bytes']:,} B"
    )
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_folder

    result = evaluate_folder(args.folder, data=args.data, split=args.split)
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        a = result.accuracy
        print(f"top-1 accuracy {a.percent:.2f}% ({a.correct}/{a.total}) on {result.dataset}/{result.split}")
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from .io import load_hint
    from .train import merge_folder

    folder = merge_folder(args.folder, args.out)
    print(f"merged model written to {folder}; load it without vitune: {load_hint(folder)}")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"vitune: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Run the command; a documented error prints one line and returns its exit code (docs/errors.md):
    2 usage or configuration (argparse's too), 3 data, 4 adapter or weights file, 5 the run failed, 6 the folder
    is in use by another vitune process, 130 Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The default job has its own flags and parser: `vitune`, `vitune --out DIR ...`, `vitune quickstart ...`.
    if not argv or argv[0] == "quickstart" or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        from .quickstart.command import main as quickstart

        return quickstart(argv[1:] if argv and argv[0] == "quickstart" else argv)
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _dispatch(args)
    except VituneError as e:
        print(f"vitune: error: {e}", file=sys.stderr)
        return exit_code(e)
    except OSError as e:  # a read or write the system refused (a full disk, no permission): no traceback
        print(f"vitune: error: {e}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        print("vitune: interrupted; a run continues from its last checkpoint with --resume", file=sys.stderr)
        return exit_code(KeyboardInterrupt())


def _dispatch(args: argparse.Namespace) -> int:
    commands = {"train": _run_train, "eval": _run_eval, "merge": _run_merge, "methods": _run_methods,
                "recipes": _run_recipes, "search": _run_search, "suite": _run_suite, "report": _run_report,
                "bench": _run_bench}
    if args.command in commands:
        return commands[args.command](args)
    result = demo.run(args.method, args.steps, args.out, args.seed, **_config_pairs(args.set))
    print(demo.report(result, args.method))
    ok = demo.passed(result)
    print("OK: the reloaded and merged models give the same outputs" if ok else "FAILED: outputs differ")
    return 0 if ok else 1


def _run_methods(args: argparse.Namespace) -> int:
    print(f"{'method':17s} {'mergeable':10s} {'ViT-B/16 parameters (head excluded)':>36s}")
    for name in list_methods():
        merge = "yes" if api.is_mergeable(name) else "no"
        print(f"{name:17s} {merge:10s} {_vit_b16_count(name):36,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
