"""``vitune suite``: one method over every task of a benchmark folder, one run folder per task and seed.

    RUN_ROOT/
      suite.json              the benchmark, its kind, tasks, seeds and every run's status and accuracy
      <task>/seed<S>/         a run folder (vitune train), resumable; with a search (--grid, --strategy,
                              --search), a search folder (vitune search: search.json, points/, final/)
      <task>/seed<S>.log      its output, when the run went to a worker process

The benchmark folder holds task folders (a VTAB-1k root such as NOAH's ``vtab-1k/``, an FGVC root, NOAH's
``few-shot/``); each sub-folder whose layout :func:`vitune.data.open_task` recognises is a task. A finished
run (``results.json`` present; a search: ``search.json`` with its final test) is skipped, an unfinished one
resumed, so the same command continues a suite that was interrupted (suite_jobs.py: what a run or a search is). Each run is trained under a claim (claim.py: ``<task>/seed<S>.lock``, an flock with the
owner's pid), so suites sharing a RUN_ROOT never train the same run twice: a run another live suite holds is
left to it and waited for at the end; a claim whose owner died is taken over. With ``workers > 0`` tasks run in
parallel worker processes (``python -m vitune train`` or ``search``), one task (all its seeds, in order) per worker at a time; on a machine with several GPUs worker i sees GPU
i mod count only.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..atomic import atomic_write_json
from ..errors import ERROR_KINDS, FAILED, ConfigError, DataError, RunError, VituneError, exit_code
from .claim import claim, claim_path, owner
from .config import load_recipe, resolve_config
from .runner import plain
from .suite_jobs import SearchJob, TrainJob

SUITE_FILE = "suite.json"
# Settings the suite sets per run; given as flags they would be overwritten.
SUITE_KEYS = ("data", "seed", "few_shot", "k_shot")
KIND_NAMES = {"vtab": "VTAB-1k", "fgvc": "FGVC", "imagefolder": "image folders", "fewshot": "NOAH few-shot"}


@dataclass
class SuiteRun:
    """One task and seed of the suite, and what became of it."""

    task: str
    data: Path
    seed: int
    folder: Path
    status: str = "pending"  # finished (already), trained, failed
    accuracy: float | None = None
    error: str | None = None
    exit_code: int | None = None  # a failed run's kind (vitune's exit codes, docs/errors.md)
    flags: dict[str, Any] = field(default_factory=dict)  # the run's settings (run_flags)

    def record(self, root: Path) -> dict[str, Any]:
        return {"task": self.task, "seed": self.seed, "folder": str(self.folder.relative_to(root)),
                "status": self.status, "accuracy": self.accuracy, "error": self.error, "exit_code": self.exit_code}


@dataclass
class Benchmark:
    root: Path
    kind: str
    tasks: dict[str, Path] = field(default_factory=dict)  # name -> task folder, in name order


def find_tasks(benchmark: str | Path, names: Sequence[str] | None = None,
               few_shot_shots: int | None = None, seed_for_check: int = 0) -> Benchmark:
    """The task folders of `benchmark` (sub-folders with a recognised layout), optionally only `names`."""
    from ..data import open_task

    root = Path(benchmark).expanduser()
    if not root.is_dir():
        raise DataError(f"--benchmark {root}: no such folder")
    root = root.resolve()
    found: dict[str, Path] = {}
    layouts: set[str] = set()
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            if few_shot_shots is not None:
                task = open_task(sub, few_shot=(few_shot_shots, seed_for_check))
            else:
                task = open_task(sub)
        except DataError:
            continue  # not a task folder (or not one of these shots): skipped
        found[sub.name] = sub
        layouts.add(task.layout)
    if not found:
        what = f"NOAH few-shot lists with {few_shot_shots} shots" if few_shot_shots else "task folders"
        raise DataError(f"--benchmark {root}: holds no {what} (e.g. vtab-1k/ with cifar/, dtd/, ...)")
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise DataError(f"--tasks: {', '.join(missing)} not in {root} (tasks: {', '.join(found)})")
        found = {n: found[n] for n in names}
    kind = " + ".join(sorted(KIND_NAMES.get(layout, layout) for layout in layouts))
    return Benchmark(root, kind, found)


def plan_runs(root: Path, benchmark: Benchmark, seeds: Sequence[int]) -> list[SuiteRun]:
    return [SuiteRun(name, data, seed, root / name / f"seed{seed}")
            for name, data in benchmark.tasks.items() for seed in seeds]


def run_flags(flags: Mapping[str, Any], run: SuiteRun, few_shot_shots: int | None,
              k_shot_shots: int | None = None) -> dict[str, Any]:
    out = {**flags, "data": str(run.data), "seed": run.seed}
    if few_shot_shots is not None:
        out["few_shot"] = [few_shot_shots, run.seed]  # NOAH's list for this seed, trained with the same seed
    if k_shot_shots is not None:
        out["k_shot"] = [k_shot_shots, run.seed]  # K images per class drawn with the run's seed
    return out


def train_argv(flags: Mapping[str, Any]) -> list[str]:
    """`vitune train` flags that give the settings `flags` (the inverse of the CLI's parsing)."""
    argv: list[str] = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if key in ("method_config", "model_kwargs"):
            pairs = [f"{k}={json.dumps(v)}" for k, v in value.items()]
            if pairs:
                argv += ["--set" if key == "method_config" else "--model-kwargs", *pairs]
        elif isinstance(value, bool):
            if not value:
                raise ConfigError(f"{key}: false cannot be passed to a worker process as a flag")
            argv.append(flag)
        elif key in ("few_shot", "k_shot"):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def run_suite(root: str | Path, benchmark: str | Path, flags: Mapping[str, Any], seeds: Sequence[int] | None = None,
              tasks: Sequence[str] | None = None, workers: int = 0, few_shot_shots: int | None = None,
              progress: Callable[[str], None] | None = None, *, k_shot_shots: int | None = None,
              search: SearchJob | None = None) -> dict[str, Any]:
    """Train (or search) `flags`' method on every task and seed of `benchmark`; returns the ``suite.json`` document.

    Args:
        root: the suite's root folder (RUN_ROOT).
        benchmark: the folder of task folders.
        flags: run settings shared by every run (``vitune train``'s, without data and seed).
        seeds: one run per seed and task (``--seed``; with `few_shot_shots`, also the list's seed); None: the
            recipe's seed, else 42.
        tasks: only these task folder names (default: all).
        workers: 0 trains in this process, one run after another; N > 0 runs N worker processes.
        few_shot_shots: K for NOAH's ``num_shot_K.seed_S`` lists (the seed is the run's).
        k_shot_shots: K for ELEVATER-style sampling, K images per class drawn with the run's seed.
        search: a :class:`SearchJob`: every task and seed is a ``vitune search`` (points on the validation split,
            the winner tested once) instead of one run.
    """
    for key in SUITE_KEYS:
        if key in flags:
            raise ConfigError(f"vitune suite sets --{key.replace('_', '-')} per run; use --benchmark, --seeds, "
                              "--few-shot K, --k-shot K")
    if few_shot_shots is not None and k_shot_shots is not None:
        raise ConfigError("give --few-shot K (NOAH's lists) or --k-shot K (K images per class drawn), not both")
    if seeds is None:
        seeds = [load_recipe(flags["recipe"]).values.get("seed", 42) if flags.get("recipe") else 42]
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if workers < 0:
        raise ConfigError(f"--workers must not be negative, got {workers}")
    root = Path(root)
    say = progress or (lambda message: None)
    job = search or TrainJob()
    job.check(flags.get("recipe"))
    bench = find_tasks(benchmark, tasks, few_shot_shots, seed_for_check=seeds[0])
    runs = plan_runs(root, bench, seeds)
    for run in runs:  # every run's settings are checked before anything trains
        run.flags = run_flags(flags, run, few_shot_shots, k_shot_shots)
        resolve_config(run.flags)

    pending = []
    for run in runs:
        if job.finished(run.folder):
            run.status = "finished"
            run.accuracy = job.accuracy(run.folder)
            say(f"{run.task} seed {run.seed}: finished already ({run.accuracy:.2f}%), skipped")
        else:
            pending.append(run)

    def write_document() -> dict[str, Any]:
        document = plain({
            "benchmark": str(bench.root), "kind": bench.kind, "tasks": list(bench.tasks), "seeds": list(seeds),
            "few_shot_shots": few_shot_shots, "k_shot_shots": k_shot_shots, "search": job.describe(),
            "workers": workers, "settings": dict(flags), "runs": [run.record(root) for run in runs],
        })
        atomic_write_json(root / SUITE_FILE, document)
        return document

    write_document()
    if workers == 0:
        def here(run: SuiteRun, fd: int) -> None:
            _run_here(job, run, say)

        deferred = []
        for run in pending:
            if not _under_claim(job, run, here, False, say):
                deferred.append(run)
            write_document()
        for run in deferred:  # runs another suite was training: wait for it, train them if it died
            _under_claim(job, run, here, True, say)
            write_document()
    else:
        deferred = _run_in_workers(job, pending, workers, say, wait=False)
        _run_in_workers(job, deferred, workers, say, wait=True)
    return write_document()


def _under_claim(job: TrainJob | SearchJob, run: SuiteRun, train_run: Callable[[SuiteRun, int], None], wait: bool,
                 say: Callable[[str], None]) -> bool:
    """Train `run` while holding its claim; False (nothing done) when another live suite holds it and not `wait`.

    A run that another suite finished meanwhile is marked finished, not trained again."""
    path = claim_path(run.folder)
    with claim(path) as fd:
        if fd is None:
            holder = owner(path)
        else:
            _train_unless_finished(job, run, train_run, fd, say)
            return True
    if not wait:
        say(f"{run.task} seed {run.seed}: being trained by another suite ({holder}); back to it at the end")
        return False
    say(f"{run.task} seed {run.seed}: waiting for the other suite ({holder}) to finish it")
    with claim(path, wait=True) as fd:
        _train_unless_finished(job, run, train_run, fd, say)
    return True


def _train_unless_finished(job: TrainJob | SearchJob, run: SuiteRun, train_run: Callable[[SuiteRun, int], None],
                           fd: int, say) -> None:
    if job.finished(run.folder):
        run.status, run.accuracy = "finished", job.accuracy(run.folder)
        say(f"{run.task} seed {run.seed}: finished by another suite ({run.accuracy:.2f}%)")
    else:
        train_run(run, fd)


def _run_here(job: TrainJob | SearchJob, run: SuiteRun, say) -> None:
    say(f"{run.task} seed {run.seed}: {job.command} into {run.folder}")
    try:
        accuracy = job.run(run.flags, run.folder)
    except VituneError as e:
        run.status, run.error, run.exit_code = "failed", str(e), exit_code(e)
        say(f"{run.task} seed {run.seed}: failed: {e}")
        return
    run.status, run.accuracy = "trained", accuracy
    say(f"{run.task} seed {run.seed}: {run.accuracy:.2f}%")


def _worker_env(index: int, workers: int) -> dict[str, str]:
    """The worker's environment: vitune importable, its share of the CPU threads, and its GPU."""
    import vitune

    env = dict(os.environ)
    src = str(Path(vitune.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        count = _cuda_count()
        if count > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(index % count)
    return env


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _run_in_workers(job: TrainJob | SearchJob, pending: list[SuiteRun], workers: int, say,
                    wait: bool) -> list[SuiteRun]:
    """Run the pending runs in `workers` processes, one task (its seeds in order) per worker at a time.

    Returns the runs another live suite held (only when not `wait`)."""
    deferred: list[SuiteRun] = []
    by_task: dict[str, list[SuiteRun]] = {}
    for run in pending:
        by_task.setdefault(run.task, []).append(run)
    jobs: queue.Queue = queue.Queue()
    for task_runs in by_task.values():
        jobs.put(task_runs)
    lock = threading.Lock()

    def say_locked(message: str) -> None:
        with lock:
            say(message)

    def work(index: int) -> None:
        env = _worker_env(index, workers)
        while True:
            try:
                task_runs = jobs.get_nowait()
            except queue.Empty:
                return
            for run in task_runs:
                def in_worker(one: SuiteRun, fd: int) -> None:
                    _run_subprocess(job, one, env, lock, say, fd)

                if not _under_claim(job, run, in_worker, wait, say_locked):
                    with lock:
                        deferred.append(run)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(min(workers, len(by_task)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return deferred


def _run_subprocess(job: TrainJob | SearchJob, run: SuiteRun, env: dict[str, str], lock: threading.Lock, say,
                    claim_fd: int) -> None:
    argv = [sys.executable, "-m", "vitune", *job.argv(run.folder), *train_argv(run.flags)]
    log = run.folder.with_name(f"{run.folder.name}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with lock:
        say(f"{run.task} seed {run.seed}: {job.command} into {run.folder} (worker process, output in {log.name})")
    with open(log, "a", encoding="utf-8") as out:
        # the worker shares the claim's lock, so the claim outlives a killed suite while its worker trains
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=env, pass_fds=(claim_fd,))
    with lock:
        if code == 0 and job.finished(run.folder):
            run.status, run.accuracy = "trained", job.accuracy(run.folder)
            say(f"{run.task} seed {run.seed}: {run.accuracy:.2f}%")
        else:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
            run.status, run.error = "failed", f"exit code {code}: {tail[0]} (log: {log})"
            run.exit_code = code if code in ERROR_KINDS else FAILED  # a crash or a signal: FAILED
            say(f"{run.task} seed {run.seed}: failed: {run.error}")


def summary_error(document: Mapping[str, Any]) -> RunError | None:
    """A RunError naming the failed runs, or None when every run finished.

    Its exit code is the failed runs' kind when they share one (all bad configs: 2), else 5."""
    failed = [r for r in document["runs"] if r["status"] == "failed"]
    if not failed:
        return None
    names = [f"{r['task']}/seed{r['seed']}" for r in failed]
    error = RunError(f"{len(failed)} run(s) failed: {', '.join(names)}; see suite.json, fix and re-run to resume")
    kinds = {r.get("exit_code") for r in failed}
    error.exit_code = kinds.pop() if len(kinds) == 1 and None not in kinds else FAILED
    return error
