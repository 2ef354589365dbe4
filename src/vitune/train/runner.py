"""``vitune train``: one run from its configuration to ``results.json``, resumable at every epoch.

Order of writes (rank 0 only): config.yaml; per epoch checkpoint/ then log.jsonl and TensorBoard; at the end
adapter/ and, last, results.json. A process killed anywhere restarts with ``--resume`` from the last
checkpoint and redoes the interrupted epoch with the same randomness (seeding.py), so it ends with the
same tensors and accuracy as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .. import __version__, api, io
from ..errors import NonFiniteLossError, RunError, RunFailedError, VituneError
from . import distributed
from .build import build_model
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .config import RunConfig, config_from_dict, differences, resolve_config
from .distributed import DistEnv
from .evaluate import evaluate
from .iterative import Phase, enter_phase, finish_phases, phase_of, plan_phases
from .loop import train_one_epoch, usable_batches
from .optim import build_loss, build_optimizer, build_scheduler
from .precision import Precision
from .resources import accelerator_peak_mib, peak_rss_mib, reset_accelerator_peak, rss_mib
from .run_folder import ADAPTER, CHECKPOINT, RunFolder
from .seeding import seed_epoch


def plain(value: Any) -> Any:
    """JSON- and YAML-ready copy (tuples become lists, paths and dtypes strings)."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class Outcome:
    """What ``vitune train`` reports: the results, or that the run had already finished."""

    folder: Path
    results: dict[str, Any]
    already_finished: bool = False


def _config_for(folder: RunFolder, flags: Mapping[str, Any], resume: bool) -> RunConfig:
    """The run's configuration: from the flags, or (``--resume`` with nothing but ``--out``) from config.yaml."""
    if resume and not flags and (folder / "config.yaml").is_file():
        return config_from_dict(folder.read_config()["run"], str(folder / "config.yaml"))
    return resolve_config(flags)


def train(flags: Mapping[str, Any], out: str | Path, resume: bool = False) -> Outcome:
    """Run (or resume) training as `flags` say (command-line settings; see config.py), into run folder `out`.

    Rank 0 holds the folder until the run ends (RunFolder.hold): another process training into it makes this
    call fail at once with a FolderInUseError naming that process."""
    folder = RunFolder(out)
    config = _config_for(folder, flags, resume)
    env, device = distributed.setup(config.device)
    try:
        with contextlib.ExitStack() as hold:
            # Rank 0 holds the folder and decides from it before anyone writes to it; the others follow.
            decision = distributed.broadcast(_decide(folder, resume, hold) if env.is_main else None, env)
            if isinstance(decision, VituneError):
                raise decision
            if decision in ("resume", "finished"):
                _check_same_run(folder, config, env)
            if decision == "finished":
                return Outcome(folder.path, folder.read_results(), already_finished=True)
            return _Run(config, folder, env, device, fresh=decision == "fresh").execute()
    finally:
        distributed.teardown(env)


def _check_same_run(folder: RunFolder, config: RunConfig, env: DistEnv) -> None:
    """``--resume`` continues the run as configured: other settings or another process count are refused."""
    stored = folder.read_config()
    changed = differences(config_from_dict(stored["run"], str(folder / "config.yaml")), config)
    if changed:
        raise RunError(
            f"--resume: these settings differ from the run in {folder.path}: " + "; ".join(changed)
            + " (resume with the same settings, or with only --out and --resume)"
        )
    recorded_world = stored.get("resolved", {}).get("distributed", {}).get("world_size", 1)
    if recorded_world != env.world_size:
        raise RunError(
            f"--resume: the run used {recorded_world} process(es), this launch has {env.world_size}; "
            "resume with the same number, so the global batch stays the same"
        )


def _decide(folder: RunFolder, resume: bool, hold: contextlib.ExitStack) -> str | VituneError:
    """'fresh', 'resume' or 'finished' with the folder held in `hold`; the error (sent to every rank) if not."""
    try:
        hold.enter_context(folder.hold())
        decision = folder.start(resume)
    except VituneError as e:
        return e
    except OSError as e:  # no permission to create the folder or its lock file
        return RunFailedError(f"run folder {folder.path}: cannot be created or locked ({e})")
    folder.clean_leftovers()
    return decision


def _check_finite(tensors: dict[str, torch.Tensor], when: str) -> None:
    """Refuse to checkpoint NaN or infinite weights (a last step can break them while its loss was finite)."""
    if not tensors:
        return
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).cpu()
    bad = [name for name, ok in zip(tensors, finite.tolist()) if not ok]
    if bad:
        raise NonFiniteLossError(f"{when}: the trained tensor(s) {', '.join(bad[:3])} became NaN or infinite "
                                 "(lower --lr, or try --clip-grad 1.0)")


class _Run:
    """The state of one training process for one run."""

    def __init__(self, config: RunConfig, folder: RunFolder, env: DistEnv, device: torch.device, fresh: bool):
        from ..data import build_transforms, default_transform_kind, open_task

        self.config, self.folder, self.env, self.device, self.fresh = config, folder, env, device, fresh
        self.task = open_task(config.data, few_shot=tuple(config.few_shot) if config.few_shot else None,
                              k_shot=tuple(config.k_shot) if config.k_shot else None)
        self.train_split = config.train_split or self.task.default_train
        self.eval_split = config.eval_split or self.task.default_eval
        for split, flag in ((self.train_split, config.train_split), (self.eval_split, config.eval_split)):
            if split not in self.task.splits:
                if not flag:  # the layout's own split is absent: the data error names its missing file
                    self.task.samples(split)
                raise RunError(f"--data {config.data}: no split {split!r}; this task has {', '.join(self.task.splits)}")

        self.model, self.source, self.img_size = build_model(
            config, self.task.num_classes, warn=env.is_main and fresh
        )
        self.model.to(device)
        self.phases = plan_phases(self.model, config.epochs, config.rounds)
        self.total_epochs = self.phases[-1].end_epoch

        self.transform_kind = default_transform_kind(self.task.layout)
        train_tf, eval_tf, self.transform_info = build_transforms(
            self.transform_kind, img_size=self.img_size, normalize=config.normalize,
            pretrained_cfg=getattr(self.model, "pretrained_cfg", None),
        )
        # Augmentation draws per (seed, epoch, item): the same whatever the workers, processes or resumes.
        self.train_set = self.task.dataset(self.train_split, train_tf, seed=config.seed)
        self.eval_set = self.task.dataset(self.eval_split, eval_tf)
        # The same sampler in one process and in many: the global batch order depends on the seed alone.
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
        )
        self.loader = DataLoader(
            self.train_set, batch_size=config.batch_size, sampler=self.sampler, num_workers=config.workers,
            drop_last=config.drop_last, pin_memory=device.type == "cuda",
        )
        self.updates_per_epoch = usable_batches(len(self.loader), config.grad_accum_steps) // config.grad_accum_steps
        if self.updates_per_epoch == 0:
            raise RunError(
                f"split {self.train_split!r} has {len(self.train_set)} images: fewer than one optimizer step "
                f"({env.world_size} process(es) x batch {config.batch_size} x {config.grad_accum_steps} accumulation "
                "steps); lower --batch-size"
            )
        self.precision = Precision.choose(config.amp, device)
        self.loss_fn = build_loss(config)

    # ---- configuration record -------------------------------------------------------------------------
    def resolved(self) -> dict[str, Any]:
        c = self.config
        method = api.applied_method(self.model)
        return plain({
            "method_config": method.config.to_dict(),
            "backbone": self.source,
            "data": {
                "folder": c.data, "dataset": self.task.name, "layout": self.task.layout,
                "num_classes": self.task.num_classes, "train_split": self.train_split, "eval_split": self.eval_split,
                "few_shot": c.few_shot, "train_images": len(self.train_set), "eval_images": len(self.eval_set),
                # the K-shot images drawn (data/k_shot.py): which ones trained, which validated
                "k_shot": self.task.describe()["k_shot"] if c.k_shot else None,
            },
            "transforms": {"kind": self.transform_kind, "img_size": self.img_size, "normalize": c.normalize,
                           **self.transform_info},
            "optimizer": {"opt": c.opt, "lr": c.lr, "weight_decay": c.weight_decay, "momentum": c.momentum,
                          "eps": c.opt_eps, "filter_bias_and_bn": c.filter_bias_and_bn, "trainable_only": True},
            "schedule": {"sched": c.sched, "epochs": c.epochs, "total_epochs": self.total_epochs,
                         "phases": len(self.phases), "rounds": c.rounds, "warmup_epochs": c.warmup_epochs,
                         "warmup_lr": c.warmup_lr, "min_lr": c.min_lr, "on_updates": c.sched_on_updates,
                         "updates_per_epoch": self.updates_per_epoch},
            "precision": self.precision.name,
            "distributed": {"world_size": self.env.world_size,
                            "global_batch_size": self.env.world_size * c.batch_size * c.grad_accum_steps,
                            "device": self.device.type},
            "versions": {"vitune": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "python": platform.python_version()},
        })

    # ---- the run --------------------------------------------------------------------------------------
    def execute(self) -> Outcome:
        env = self.env
        if env.is_main and self.fresh:
            self.folder.write_config({"run": self.config.to_dict(), "resolved": self.resolved()})
        state = distributed.broadcast(
            (load_checkpoint(self.folder / CHECKPOINT) if env.is_main else None) or TrainState(), env
        )
        if state.model:
            self._load_tensors(state.model)
        writer = None
        if env.is_main:
            self.folder.write_log(state.rows)  # a killed process may have stopped between checkpoint and log
            writer = self.folder.tensorboard(purge_step=state.epochs_done if state.epochs_done else None)
        self.saved_epochs = state.epochs_done  # what the checkpoint on disk holds
        try:
            try:
                self._train(state, writer)
            finally:
                if writer is not None:
                    writer.close()
            return self._finish(state)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e}; {self._kept()}") from None
        except OSError as e:
            if isinstance(e, VituneError):
                raise
            # a full disk, a lost mount: the atomic writes left every file as it was before
            raise RunFailedError(f"a write to the run folder failed ({e}); {self._kept()}") from None

    def _kept(self) -> str:
        """What a failed run leaves behind, for its error message."""
        if not self.saved_epochs:
            return "no checkpoint was written yet and no results.json; fix the cause and start the run again"
        return (f"the checkpoint of epoch {self.saved_epochs}/{self.total_epochs} in {self.folder / CHECKPOINT} "
                "is kept and no results.json was written; fix the cause, then --resume (same settings) or start "
                "a new run")

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        targets = api.trainable_state(self.model)
        if set(targets) != set(tensors):
            raise RunError(f"{self.folder / CHECKPOINT}: its tensors do not match this run's model")
        with torch.no_grad():
            for name, target in targets.items():
                target.copy_(tensors[name])

    def _train(self, state: TrainState, writer) -> None:
        c, env = self.config, self.env
        phase: Phase | None = None
        ddp = optimizer = scheduler = scaler = None
        for epoch in range(state.epochs_done, self.total_epochs):
            if phase is None or epoch >= phase.end_epoch:
                phase = phase_of(self.phases, epoch)
                enter_phase(self.model, phase)
                ddp = None  # drop the old reducer before building one over the new trainable set
                ddp = distributed.wrap(self.model, env, self.device)
                optimizer = build_optimizer(self.model, c)
                scheduler = build_scheduler(optimizer, c, phase.epochs, self.updates_per_epoch)
                scaler = self.precision.grad_scaler()
                if state.optimizer is not None and state.phase == phase.index:
                    optimizer.load_state_dict(state.optimizer)
                    if scaler is not None and state.scaler is not None:
                        scaler.load_state_dict(state.scaler)
            local = epoch - phase.first_epoch
            seed_epoch(c.seed, epoch, env.rank)
            self.sampler.set_epoch(epoch)
            self.train_set.set_epoch(epoch)
            scheduler.step(local)
            if c.sched_on_updates:
                scheduler.step_update(local * self.updates_per_epoch)
            reset_accelerator_peak(self.device)
            started = time.perf_counter()
            sums = train_one_epoch(
                ddp, self.loader, optimizer, scheduler, self.loss_fn, device=self.device,
                precision=self.precision, scaler=scaler, grad_accum_steps=c.grad_accum_steps,
                clip_grad=c.clip_grad, clip_mode=c.clip_mode, sched_on_updates=c.sched_on_updates,
                first_update=local * self.updates_per_epoch,
                description=f"epoch {epoch + 1}/{self.total_epochs}", show_progress=env.is_main,
            )
            loss_sum, correct, seen = distributed.all_sum([sums.loss_sum, sums.correct, sums.seen], env, self.device)
            eval_acc = None
            last = epoch == self.total_epochs - 1
            if last or c.selection == "best_eval" or (c.eval_interval and (epoch + 1) % c.eval_interval == 0):
                eval_acc = self._evaluate().percent
            seconds = time.perf_counter() - started
            row = {
                "epoch": epoch, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen, "lr": sums.lr,
                "eval_acc": eval_acc, "epoch_seconds": round(seconds, 3), "rss_mib": rss_mib(),
                "accel_peak_mib": accelerator_peak_mib(self.device), **phase.log_fields(),
            }
            state.epochs_done = epoch + 1
            state.phase = phase.index
            state.model = api.trainable_state(self.model)
            state.optimizer = optimizer.state_dict()
            state.scaler = scaler.state_dict() if scaler is not None else None
            state.rows.append(row)
            state.train_seconds += seconds
            state.peak_rss_mib = max(state.peak_rss_mib, peak_rss_mib())
            if c.selection == "best_eval" and (state.best is None or eval_acc > state.best["accuracy"]):
                state.best = {"epoch": epoch, "accuracy": eval_acc}
                state.best_model = {n: t.detach().clone() for n, t in state.model.items()}
            _check_finite(state.model, f"epoch {epoch + 1}/{self.total_epochs}")
            if env.is_main:
                save_checkpoint(self.folder / CHECKPOINT, state)
                self.saved_epochs = state.epochs_done
                self.folder.write_log(state.rows)
                self._tensorboard(writer, row)

    def _evaluate(self):
        return evaluate(
            self.model, self.eval_set, batch_size=self.config.eval_batch_size, device=self.device,
            precision=self.precision, workers=self.config.workers, env=self.env,
        )

    @staticmethod
    def _tensorboard(writer, row: dict[str, Any]) -> None:
        step = row["epoch"]
        for key in ("train_loss", "train_acc", "lr", "eval_acc", "rss_mib", "accel_peak_mib"):
            if row.get(key) is not None:
                writer.add_scalar(key, row[key], step)
        writer.flush()

    def _finish(self, state: TrainState) -> Outcome:
        c = self.config
        if c.selection == "best_eval":
            self._load_tensors(state.best_model)
            accuracy, chosen = state.best["accuracy"], state.best["epoch"]
        else:
            accuracy, chosen = state.rows[-1]["eval_acc"], state.rows[-1]["epoch"]
        finish_phases(self.model, self.phases)
        results = self._results(state, accuracy, chosen)
        if self.env.is_main:
            source = {**self.source, "input": {"img_size": self.img_size, "normalize": c.normalize,
                                               "transform": self.transform_kind}}
            io.save_adapter(self.model, self.folder / ADAPTER, source=source)
            results["adapter_bytes"] = io.adapter_bytes(self.folder / ADAPTER)
            self.folder.write_results(results)
        distributed.barrier(self.env)
        return Outcome(self.folder.path, results)

    def _results(self, state: TrainState, accuracy: float, chosen_epoch: int) -> dict[str, Any]:
        c = self.config
        method = api.applied_method(self.model)
        results = {
            "accuracy": accuracy,
            "method": c.method,
            "method_config": method.config.to_dict(),
            "model": c.model,
            "model_kwargs": self.source["model_kwargs"],
            "pretrained": self.source["pretrained"],
            "pretrained_tag": self.source["pretrained_tag"],
            "weights": self.source["weights"],
            "weights_sha256": self.source["weights_sha256"],
            "init_seed": None if (self.source["pretrained"] or c.weights) else c.seed,
            "head": c.head,
            "data": c.data,
            "dataset": self.task.name,
            "layout": self.task.layout,
            "few_shot": c.few_shot,
            "k_shot": c.k_shot,
            "num_classes": self.task.num_classes,
            "train_split": self.train_split,
            "eval_split": self.eval_split,
            "eval_images": len(self.eval_set),
            "normalize": c.normalize,
            "img_size": self.img_size,
            "transform": self.transform_kind,
            "epochs": c.epochs,
            "rounds": c.rounds,
            "total_epochs": self.total_epochs,
            "batch_size": c.batch_size,
            "global_batch_size": self.env.world_size * c.batch_size * c.grad_accum_steps,
            "world_size": self.env.world_size,
            "opt": c.opt,
            "lr": c.lr,
            "weight_decay": c.weight_decay,
            "sched": c.sched,
            "precision": self.precision.name,
            "seed": c.seed,
            "selection": c.selection,
            "selected_epoch": chosen_epoch,
            "counts": api.count_parameters(self.model),
            "adapter_bytes": None,
            "train_seconds": round(state.train_seconds, 3),
            "peak_rss_mib": max(state.peak_rss_mib, peak_rss_mib()),
            "recipe": c.recipe,
            "vitune_version": __version__,
            "torch_version": torch.__version__,
            "timm_version": timm.__version__,
            "python": sys.version.split()[0],
        }
        if c.selection == "best_eval":
            # Marked: choosing the epoch on the split that is reported inflates the figure.
            results["selection_note"] = (
                f"the epoch was chosen by its accuracy on the {self.eval_split!r} split that is reported; "
                "the figure is optimistic and not comparable with final-epoch results"
            )
        return plain(results)
