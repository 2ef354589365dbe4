"""``vitune search``: a hyper-parameter search that selects on the validation split and tests the winner once.

vitune's protocol (docs/benchmarks-vtab.md, "No selection on test"): every point trains on the train split
(VTAB-1k: ``train800``) and is scored on the validation split (``val200``); the chosen point is retrained on
train+val (``train800val200``) and evaluated on the test split, once. Nothing is chosen on test. Which points
are tried is the strategy's: ``grid`` (every combination of ``--grid`` values; the best validation accuracy
wins, ties to the first in grid order) or ``pevit`` (search_pevit.py: PEViT's learning-rate decades x
weight-decay bisection). Without ``--grid`` and ``--strategy``, the recipe's published search is used
(``search:`` in the recipe). The search root holds one run folder per point, the final run, and
``search.json``:

    RUN_ROOT/
      search.json            the strategy, every point's validation accuracy, the choice, the test accuracy
      points/<name>/         one run folder per point (name from its values: lr=0.001,scale=0.5)
      final/                 the winner retrained on train+val, evaluated on test

Grid keys are run settings (``lr``, ``weight_decay``, ``drop_path`` ...) or a method config key with the
prefix ``method.`` (``method.scale``). Every run goes through :func:`vitune.train.train` with ``resume=True``:
a finished point is skipped, an interrupted one continues from its checkpoint, so re-running the same
command finishes an interrupted search. A point whose loss diverges is recorded with its error and no score.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_write_json
from ..errors import ConfigError, NonFiniteLossError, RunError
from .claim import hold_folder
from .config import FIELDS, RunConfig, load_recipe, resolve_config
from .runner import plain, train
from .search_pevit import PEVIT_LRS, PEVIT_POINT_EPOCHS, PevitStrategy, Score, WeightDecayGrid

SEARCH_FILE = "search.json"
POINTS = "points"
FINAL = "final"
METHOD_PREFIX = "method."
# Settings a grid may not vary: they define the task and the protocol the search itself fixes.
FIXED_KEYS = ("method", "data", "few_shot", "k_shot", "train_split", "eval_split", "recipe", "selection", "device",
              "workers")
STRATEGIES = ("grid", "pevit")


@dataclass(frozen=True)
class SearchSplits:
    """The four splits of a search: fit and score the points, then retrain and test the winner."""

    train: str
    val: str
    final_train: str
    test: str

    def to_dict(self) -> dict[str, str]:
        return {"train": self.train, "val": self.val, "final_train": self.final_train, "test": self.test}


# Per layout: (train, validation, train+validation, test). Image folders and NOAH's few-shot lists have no
# train+validation split, so a search there would have to retrain on less data than it selected with.
_LAYOUT_SPLITS = {
    "vtab": SearchSplits("train800", "val200", "train800val200", "test"),
    "fgvc": SearchSplits("train", "val", "trainval", "test"),
}


def search_splits(data: str | Path, few_shot: Sequence[int] | None = None,
                  k_shot: Sequence[int] | None = None) -> SearchSplits:
    """The search's splits for the task folder `data`; a DataError/RunError when it lacks one.

    With `k_shot` (ELEVATER's protocol, data/k_shot.py) the points train on ``kshot_train``, are scored on
    ``kshot_val``, and the winner retrains on all K shots (``kshot``) before the task's own test split."""
    from ..data import open_task
    from ..data.k_shot import KSHOT, KSHOT_TRAIN, KSHOT_VAL

    task = open_task(data, few_shot=tuple(few_shot) if few_shot else None,
                     k_shot=tuple(k_shot) if k_shot else None)
    if k_shot:
        task.samples(KSHOT_TRAIN)  # a class short of K images (or K = 1) is refused before anything trains
        return SearchSplits(KSHOT_TRAIN, KSHOT_VAL, KSHOT, task.default_eval)
    splits = _LAYOUT_SPLITS.get(task.layout)
    if splits is None:
        raise RunError(
            f"--data {task.root}: a {task.layout} task has no train / validation / train+validation / test splits; "
            "vitune search needs a VTAB-1k (train800, val200, train800val200, test) or FGVC "
            "(train, val, trainval, test) task"
        )
    missing = [s for s in splits.to_dict().values() if s not in task.splits]
    if missing:
        raise RunError(f"--data {task.root}: vitune search needs the split(s) {', '.join(missing)}, which are missing")
    return splits


def parse_grid(entries: Sequence[str], parse_value=None) -> dict[str, list[Any]]:
    """``["lr=1e-3,1e-2", "method.scale=0.1,1"]`` -> ``{"lr": [0.001, 0.01], "method.scale": [0.1, 1]}``."""
    parse_value = parse_value or _json_or_text
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        key, sep, values = entry.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {entry!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice")
        check_grid_key(key)
        parsed = [parse_value(v.strip()) for v in values.split(",")]
        if len({repr(v) for v in parsed}) != len(parsed):
            raise ConfigError(f"--grid {key}: a value is repeated in {values!r}")
        grid[key] = parsed
    if not grid:
        raise ConfigError("vitune search needs at least one --grid KEY=V1,V2,...")
    return grid


def _json_or_text(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def check_grid_key(key: str) -> None:
    if key.startswith(METHOD_PREFIX):
        if not key[len(METHOD_PREFIX):]:
            raise ConfigError(f"--grid {key!r}: name the method config key after 'method.', e.g. method.scale")
        return
    if key in FIXED_KEYS:
        raise ConfigError(f"--grid {key}: the search fixes this setting; it cannot be searched")
    if key not in FIELDS:
        import difflib

        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"--grid {key!r}: not a run setting{hint}; method config keys take the prefix 'method.' (method.scale)"
        )


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest (as nested loops in the order given)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(values: Mapping[str, Any]) -> str:
    """A folder name from the point's values: ``lr=0.001,scale=0.5`` (the ``method.`` prefix dropped)."""
    parts = []
    for key, value in values.items():
        short = key[len(METHOD_PREFIX):] if key.startswith(METHOD_PREFIX) else key
        text = value if isinstance(value, str) else _json_text(value)
        parts.append(f"{short}={text}")
    return re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]", "_", ",".join(parts))


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def with_values(flags: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`flags` with the grid point's `values` on top (method keys merged into ``method_config``)."""
    out = dict(flags)
    method_config = dict(out.get("method_config") or {})
    for key, value in values.items():
        if key.startswith(METHOD_PREFIX):
            method_config[key[len(METHOD_PREFIX):]] = value
        else:
            out[key] = value
    if method_config:
        out["method_config"] = method_config
    return out


@dataclass(frozen=True)
class GridStrategy:
    """Every combination of the grid's values; the best validation accuracy wins, ties to the first."""

    grid: dict[str, list[Any]]

    name = "grid"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "selection": "highest validation accuracy; ties go to the first point in grid order"}

    def choose(self, score: Score) -> dict[str, Any]:
        best: tuple[float, dict[str, Any]] | None = None
        for values in grid_points(self.grid):
            value = score(values, "grid")
            if value is not None and not math.isnan(value) and (best is None or value > best[0]):
                best = (value, values)
        if best is None:
            raise RunError("vitune search: no grid point has a validation accuracy")
        return best[1]


def make_strategy(grid: Mapping[str, Sequence[Any]] | None, strategy: str | None, recipe: str | None,
                  wd_grid: WeightDecayGrid | None = None) -> GridStrategy | PevitStrategy:
    """The strategy the command asks for: ``--strategy``, else ``--grid``, else the recipe's published search.

    ``pevit`` takes its learning rates from ``--grid lr=...`` when given (else PEViT's decades) and its weight
    decays from `wd_grid` (else PEViT's 97-point grid)."""
    published = load_recipe(recipe).search if recipe else {}
    name = strategy or ("grid" if grid else published.get("strategy", "grid" if published.get("grid") else None))
    if name is None:
        raise ConfigError(
            "vitune search needs --grid KEY=V1,V2,... or --strategy pevit"
            + (f" (recipe {recipe} publishes no search)" if recipe else ", or a --recipe with a published search")
        )
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "pevit":
        if grid and set(grid) - {"lr"}:
            raise ConfigError("--strategy pevit searches lr and weight_decay itself; --grid may only list lr values")
        lrs = tuple(grid["lr"]) if grid else PEVIT_LRS
        return PevitStrategy(lrs, wd_grid or WeightDecayGrid())
    if wd_grid is not None:
        raise ConfigError("--pevit-wd-grid applies to --strategy pevit only")
    if not grid:
        grid = published.get("grid") or {}
        if not grid:
            raise ConfigError(f"--strategy grid needs --grid KEY=V1,V2,... (recipe {recipe} publishes no grid)")
    for key, values in grid.items():
        check_grid_key(key)
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"search grid {key}: expected a list of values, got {values!r}")
    return GridStrategy({key: list(values) for key, values in grid.items()})


def _check_flags(flags: Mapping[str, Any]) -> None:
    for key in ("train_split", "eval_split"):
        if key in flags:
            raise ConfigError(f"vitune search sets the splits itself; drop --{key.replace('_', '-')}")
    if flags.get("selection", "final_epoch") != "final_epoch":
        raise ConfigError(
            "vitune search reports the final epoch of every run: --selection best_eval would choose the final "
            "run's epoch on the test split"
        )


def run_search(root: str | Path, grid: Mapping[str, Sequence[Any]] | None, flags: Mapping[str, Any],
               progress=None, *, strategy: str | None = None, point_epochs: int | None = None,
               wd_grid: WeightDecayGrid | None = None) -> dict[str, Any]:
    """Train the strategy's points, pick the best on validation, retrain it on train+val and test it once.

    Args:
        root: the search root (created; re-running continues it).
        grid: grid key -> values (:func:`parse_grid`), or None for the recipe's published search.
        flags: the run settings shared by every point, as for :func:`vitune.train.train` (``data`` required).
        progress: optional ``callable(str)`` told about each run as it starts or is skipped.
        strategy: ``"grid"`` or ``"pevit"`` (see :func:`make_strategy`).
        point_epochs: epochs of every point (default: the run's epochs; ``pevit``: PEViT's 10); the final run
            trains the run's epochs.
        wd_grid: the weight-decay grid of ``pevit``.

    Returns the ``search.json`` document.
    """
    root = Path(root)
    _check_flags(flags)
    chosen_strategy = make_strategy(grid, strategy, flags.get("recipe"), wd_grid)
    if point_epochs is None and chosen_strategy.name == "pevit":
        point_epochs = PEVIT_POINT_EPOCHS
    if point_epochs is not None:
        if point_epochs < 1:
            raise ConfigError(f"--point-epochs must be at least 1, got {point_epochs}")
        if "epochs" in getattr(chosen_strategy, "grid", {}):
            raise ConfigError("--point-epochs and a grid over epochs: give one of them")
    config = resolve_config(flags)  # the shared settings are checked before anything is trained
    splits = search_splits(config.data, config.few_shot, config.k_shot)
    # One search per root at a time (claim.py): a second one on this root fails at once, naming the first.
    with hold_folder(root, "search folder", "run the command again (the search goes on), or choose another RUN_ROOT"):
        return _search(root, chosen_strategy, flags, point_epochs, config, splits, progress or (lambda message: None))


def _search(root: Path, strategy: GridStrategy | PevitStrategy, flags: Mapping[str, Any], point_epochs: int | None,
            config: RunConfig, splits: SearchSplits, say) -> dict[str, Any]:
    grid = getattr(strategy, "grid", None)
    document: dict[str, Any] = {
        "strategy": strategy.describe(),
        "grid": {k: list(v) for k, v in grid.items()} if grid is not None else None,
        "grid_keys": list(grid) if grid is not None else None,  # the grid's order (JSON objects are sorted)
        "splits": splits.to_dict(),
        "point_epochs": point_epochs if point_epochs is not None else config.epochs,
        "data": config.data,
        "method": config.method,
        "recipe": config.recipe,
        "k_shot": list(config.k_shot) if config.k_shot else None,
        "base": plain(dict(flags)),
        "points": [],
        "choice": None,
        "final": None,
    }
    previous = _read(root)
    same = ("strategy", "grid", "base", "point_epochs")
    if previous is not None and any(previous.get(key) != plain(document[key]) for key in same):
        raise RunError(
            f"{root / SEARCH_FILE}: this root holds a search with another grid, strategy or other settings; "
            "choose another RUN_ROOT or repeat the same command to continue it"
        )
    point_flags = dict(flags) if point_epochs is None else {**flags, "epochs": point_epochs}
    scored: dict[str, dict[str, Any]] = {}

    def score(values: dict[str, Any], stage: str) -> float | None:
        name = point_name(values)
        if name in scored:  # a strategy may come back to a point: it is trained once
            return scored[name]["val_accuracy"]
        folder = root / POINTS / name
        say(f"point {name} ({stage}): train on {splits.train}, score on {splits.val}")
        entry = {"values": plain(dict(values)), "folder": str(folder.relative_to(root)), "stage": stage}
        try:
            outcome = train({**with_values(point_flags, values), "train_split": splits.train,
                             "eval_split": splits.val}, folder, resume=True)
        except NonFiniteLossError as e:  # a diverging point scores nothing; the search goes on
            say(f"point {name}: {e}")
            entry.update(val_accuracy=None, reused=False, error=str(e))
        else:
            entry.update(val_accuracy=outcome.results["accuracy"], reused=outcome.already_finished)
        scored[name] = entry
        document["points"].append(entry)
        _write(root, document)
        return entry["val_accuracy"]

    values = strategy.choose(score)
    best = scored[point_name(values)]
    document["choice"] = {"values": best["values"], "folder": best["folder"], "val_accuracy": best["val_accuracy"]}
    _write(root, document)

    final_flags = {**with_values(flags, best["values"]), "train_split": splits.final_train, "eval_split": splits.test}
    say(f"final: {point_name(best['values'])} on {splits.final_train}, tested once on {splits.test}")
    outcome = train(final_flags, root / FINAL, resume=True)
    document["final"] = {
        "values": best["values"],
        "folder": FINAL,
        "train_split": splits.final_train,
        "eval_split": splits.test,
        "test_accuracy": outcome.results["accuracy"],
    }
    _write(root, document)
    return document


def _read(root: Path) -> dict[str, Any] | None:
    import json

    path = root / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot be read ({e})") from None


def _write(root: Path, document: dict[str, Any]) -> None:
    atomic_write_json(root / SEARCH_FILE, plain(document))
