"""The quickstart job, ``vitune`` with no arguments: adapters on the embedded pretrained backbone and the
embedded Fashion-MNIST subset, trained by the training pipeline, merged, checked, timed and reported.

    from vitune.quickstart import run, main
    result = run("runs/quickstart", ("linear", "lora", "repadapter"), epochs=3)   # JobResult
    main(["--methods", "linear,lora", "--epochs", "1"])                            # the command line

See docs/quickstart.md. job.py runs it, data.py writes the data, report.py formats it, command.py is the CLI.
"""

from .command import build_parser, main
from .data import CLASSES, load_subset, write_task
from .job import DEFAULT_METHODS, JobResult, Settings, run

__all__ = ["CLASSES", "DEFAULT_METHODS", "JobResult", "Settings", "build_parser", "load_subset", "main", "run",
           "write_task"]
