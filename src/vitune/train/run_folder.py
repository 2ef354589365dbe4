"""A run folder and its files. Only rank 0 writes; every write is atomic.

    config.yaml     the resolved configuration (written first)
    log.jsonl       one JSON object per finished epoch (rewritten whole from the checkpoint's rows)
    tensorboard/    TensorBoard event files
    checkpoint/     the resumable state (checkpoint.py)
    adapter/        the adapter, head included (vitune.save_adapter), with its backbone's source
    results.json    written last: its presence means the run is finished
    .lock           held (flock) by the process running in the folder, which writes its pid and host there

One process at a time: ``vitune train`` holds the folder for the whole run (:meth:`RunFolder.hold`), so a second
one on the same folder (two ``--resume``, or a suite's worker and a hand-started resume) fails at once.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_json, atomic_write_text
from ..errors import RunError
from .claim import LOCK, hold_folder
from .config import yaml_refusal

CONFIG = "config.yaml"
LOG = "log.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"
RESULTS = "results.json"

# What atomic writes leave behind when killed: ".NAME.tmp-1a2b3c4d", ".NAME.new-...", ".NAME.old-...".
_LEFTOVER = re.compile(r"^\..+\.(tmp|new|old)-[0-9a-f]{8}$")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def _entries(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name != LOCK and not _LEFTOVER.match(p.name))

    def hold(self):
        """A context that holds the folder (creating it) while a run writes it; a FolderInUseError at once when
        another live process holds it. The kernel releases the hold when this process ends, even by SIGKILL."""
        return hold_folder(self.path, "run folder",
                           "run the command again (the run goes on from its checkpoint), or choose another --out")

    @property
    def finished(self) -> bool:
        return (self.path / RESULTS).is_file()

    def start(self, resume: bool) -> str:
        """Check the folder against ``--resume``; returns 'fresh', 'resume' or 'finished'."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path}: exists and is not a folder")
        entries = self._entries()
        if not resume:
            if entries:
                listed = ", ".join(p.name for p in entries[:5]) + (" ..." if len(entries) > 5 else "")
                raise RunError(
                    f"run folder {self.path} is not empty ({listed}); pass --resume to continue that run, "
                    "or choose another --out"
                )
            return "fresh"
        if self.finished:
            return "finished"
        if not (self.path / CONFIG).is_file():
            if entries:
                raise RunError(f"--resume: {self.path} holds no {CONFIG}, so it is not a vitune run folder")
            return "fresh"  # killed before the run wrote anything: start it
        return "resume"

    def clean_leftovers(self) -> None:
        """Remove the temporary files and folders of writes that a kill interrupted."""
        if not self.path.is_dir():
            return
        for p in self.path.iterdir():
            if _LEFTOVER.match(p.name):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def write_config(self, document: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(document, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise RunError(f"{path}: cannot be read ({e})") from None
        except yaml.YAMLError as e:
            raise RunError(f"{path}{yaml_refusal(e, 'a run configuration')}") from None
        if not isinstance(document, dict) or not isinstance(document.get("run"), dict):
            raise RunError(f"{path}: not a vitune run configuration (no 'run' mapping)")
        return document

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / LOG, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))

    def tensorboard(self, purge_step: int | None):
        """A TensorBoard writer; on resume, ``purge_step`` hides events a killed process wrote past its checkpoint."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.path / TENSORBOARD), purge_step=purge_step)

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.path / RESULTS, results)

    def read_results(self) -> dict[str, Any]:
        return json.loads((self.path / RESULTS).read_text(encoding="utf-8"))
