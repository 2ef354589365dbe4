"""``vitune eval`` and ``vitune merge``: use a trained adapter from its folder alone.

Both take a run folder (its ``adapter/`` is used, and its ``config.yaml`` supplies the data, split and
transforms) or an adapter folder (whose ``adapter_config.json`` records the backbone's source and input
settings). The backbone is re-created from the recorded source: timm name, keyword arguments, and the
seeded init, timm's weights or the local weights file (checked against its sha256).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import api, io
from ..backbones.create import rebuild_merged_on_meta, source_processor_config
from ..errors import AdapterFileError, DataError, NotMergeableError, RunError
from ..methods import get_method
from .build import load_trained, read_source
from .config import RunConfig, config_from_dict
from .distributed import DistEnv, pick_device
from .evaluate import Accuracy, evaluate
from .precision import Precision
from .run_folder import ADAPTER, CONFIG, RunFolder


@dataclass(frozen=True)
class Located:
    adapter: Path
    run: RunConfig | None  # the run's configuration when the adapter sits in a run folder


def locate(path: str | Path) -> Located:
    """The adapter folder and, when there is one, its run's configuration."""
    path = Path(path)
    if not path.exists():  # an adapter file error, like vitune.load_adapter's
        raise AdapterFileError(f"{path}: adapter folder not found (nor a run folder)")
    if (path / CONFIG).is_file() and (path / ADAPTER).is_dir():
        run_dir, adapter = path, path / ADAPTER
    elif (path / io.CONFIG_NAME).is_file():
        run_dir, adapter = path.parent, path
    elif (path / CONFIG).is_file():
        raise RunError(f"{path}: this run has no adapter yet (unfinished? continue it with vitune train --resume)")
    else:
        raise RunError(f"{path}: neither a run folder (config.yaml + adapter/) nor an adapter folder ({io.CONFIG_NAME})")
    run = None
    if (run_dir / CONFIG).is_file() and (run_dir / ADAPTER).resolve() == adapter.resolve():
        run = config_from_dict(RunFolder(run_dir).read_config()["run"], str(run_dir / CONFIG))
    return Located(adapter, run)


@dataclass(frozen=True)
class EvalResult:
    accuracy: Accuracy
    data: str
    dataset: str
    split: str
    adapter: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy.percent, "correct": self.accuracy.correct, "total": self.accuracy.total,
            "data": self.data, "dataset": self.dataset, "split": self.split, "adapter": str(self.adapter),
        }


def evaluate_folder(path: str | Path, data: str | None = None, split: str | None = None,
                    device: str = "auto") -> EvalResult:
    """Top-1 accuracy of the adapter at `path` on `split` of `data` (defaults: the run's own eval split)."""
    from ..data import build_transforms, default_transform_kind, open_task

    found = locate(path)
    run = found.run
    if data is None and run is None:
        raise RunError(f"{path}: an adapter folder outside a run folder needs --data DIR")
    own_data = run is not None and (data is None or Path(data).resolve() == Path(run.data))
    folder = run.data if data is None else str(Path(data).resolve())
    few_shot = tuple(run.few_shot) if own_data and run.few_shot else None
    k_shot = tuple(run.k_shot) if own_data and run.k_shot else None
    task = open_task(folder, few_shot=few_shot, k_shot=k_shot)
    if split is None:
        split = (run.eval_split if own_data and run.eval_split else None) or task.default_eval
    if split not in task.splits:
        raise RunError(f"--split {split!r}: {folder} has splits {', '.join(task.splits)}")

    model, source = load_trained(found.adapter)
    head = api.applied_method(model).places.num_classes(model)
    if head is not None and head != task.num_classes:
        raise DataError(
            f"{folder}: {task.num_classes} classes, but the adapter at {found.adapter} was trained with a "
            f"{head}-class head; evaluate it on data with the classes it was trained on"
        )
    inputs = source.get("input", {})
    normalize = run.normalize if run is not None else inputs.get("normalize", "model")
    kind = inputs.get("transform") or default_transform_kind(task.layout)
    img_size = inputs.get("img_size") or (run.img_size if run is not None else None) or 224
    _, eval_tf, _ = build_transforms(kind, img_size=img_size, normalize=normalize,
                                     pretrained_cfg=getattr(model, "pretrained_cfg", None))
    target = pick_device(device, DistEnv())
    model.to(target)
    precision = Precision.choose(run.amp if run is not None else False, target)
    batch = run.eval_batch_size if run is not None else 64
    accuracy = evaluate(model, task.dataset(split, eval_tf), batch_size=batch, device=target, precision=precision,
                        workers=run.workers if run is not None else 0)
    return EvalResult(accuracy, folder, task.name, split, found.adapter)


def merge_folder(path: str | Path, out: str | Path) -> Path:
    """Merge the adapter at `path` into its backbone and write a timm ``local-dir:`` folder at `out`."""
    found = locate(path)
    config = io.read_adapter_config(found.adapter)
    cls = get_method(config["method"])
    method = cls(cls.Config.from_dict(config["config"], method=config["method"]))
    if not method.is_mergeable():
        raise NotMergeableError(f"method {config['method']!r} cannot be merged: {method.not_mergeable_reason}")
    read_source(found.adapter)  # a clear error before any work when the folder lacks it
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"--out {out}: exists and is not empty; choose a new folder for the merged model")
    existed = out.exists()
    model, source = load_trained(found.adapter)
    folder = io.save_merged(api.merge(model), out, data_config=_data_config(model, source, found.run),
                            processor_config=source_processor_config(source))
    try:
        _check_rebuilds(model, folder, source, config["method"], path)
    except NotMergeableError:
        for entry in folder.iterdir():  # written by this call alone: the folder was new or empty
            entry.unlink()
        if not existed:
            folder.rmdir()
        raise
    return folder


def _check_rebuilds(model, folder: Path, source: dict[str, Any], method: str, path) -> None:
    """The export must rebuild as a user's timm rebuilds it, from its config.json alone (here on the meta
    device: names and shapes, no weights). A merge can give a bias-less layer a bias, and the family completes
    it for its constructor's flags (``complete_merge``); a merged model those flags still could not build would
    fail timm's strict load, so it is refused here."""
    stock = rebuild_merged_on_meta(folder, source)  # a Hugging Face export: by transformers' Auto class
    ours, theirs = model.state_dict(), stock.state_dict()
    differ = [f"{name} (the merge's, not the rebuilt model's)" for name in ours if name not in theirs]
    differ += [f"{name} (the rebuilt model's only)" for name in theirs if name not in ours]
    differ += [f"{name} (shape {tuple(ours[name].shape)} vs {tuple(theirs[name].shape)})"
               for name in ours if name in theirs and ours[name].shape != theirs[name].shape]
    if differ:
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise NotMergeableError(
            f"method {method!r} merges into this backbone, but timm cannot rebuild the merged model from its "
            f"config: {', '.join(differ[:3])}{more}; the merge gave a bias-less layer a bias that no timm "
            f"constructor argument adds (vitune.merged_model_args: {api.merged_model_args(model) or 'none'}). "
            f"Nothing was written; use the adapter unmerged (vitune eval {path})"
        )


def _data_config(model, source: dict[str, Any], run) -> dict[str, Any]:
    """The preprocessing the adapter was trained with, in timm's data-config keys, for the merged export."""
    from ..data import normalization

    inputs = source.get("input", {})
    normalize = run.normalize if run is not None else inputs.get("normalize", "model")
    mean, std = normalization(normalize, getattr(model, "pretrained_cfg", None))
    config: dict[str, Any] = {"mean": mean, "std": std}
    if inputs.get("img_size"):
        config["input_size"] = (3, inputs["img_size"], inputs["img_size"])
    return config
