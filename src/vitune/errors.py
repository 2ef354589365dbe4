"""The exceptions vitune raises. Every message names the offending method, key, file or tensor.

Each class carries the exit code the ``vitune`` command returns for it (docs/errors.md):
2 usage or configuration, 3 data, 4 adapter or weights file, 5 the run failed while running, 6 the folder is
in use by another vitune process.
"""


class VituneError(Exception):
    """Base class for every error vitune raises on bad input."""

    exit_code = 2  # usage or configuration, unless a subclass says otherwise


class UnknownMethodError(VituneError, KeyError):
    """A method name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ConfigError(VituneError, ValueError):
    """A method config with an unknown key or an invalid value."""


class BackboneError(VituneError, TypeError):
    """A model whose architecture vitune does not know how to adapt, or a place it lacks."""


class AdapterFileError(VituneError, OSError):
    """An adapter folder that is missing, incomplete, corrupt or made for another backbone."""

    exit_code = 4  # FILE


class NotMergeableError(VituneError, TypeError):
    """Merging a method whose update is not linear in the backbone's weights."""


class DataError(VituneError, ValueError):
    """A dataset folder, split file, line, label or image that cannot be used; the message names it."""

    exit_code = 3  # DATA


class RunError(VituneError, RuntimeError):
    """A training run that cannot start or go on (a non-empty run folder without --resume, a NaN loss ...)."""


class RunFailedError(RunError):
    """A run that started and then failed: a NaN or infinite loss, a full disk. The last checkpoint is kept."""

    exit_code = 5  # FAILED


class NonFiniteLossError(RunFailedError):
    """The training loss (or a trained tensor) became NaN or infinite; the message names the epoch and step."""


class FolderInUseError(RunError):
    """A run or search folder that another live vitune process holds (its lock file names the holder).

    Its own exit code: nothing is wrong with the command, it only has to wait until the other process ends."""

    exit_code = 6  # BUSY


USAGE, DATA, FILE, FAILED, BUSY, INTERRUPTED = 2, 3, 4, 5, 6, 130
ERROR_KINDS = (USAGE, DATA, FILE, FAILED, BUSY)  # the exit codes of vitune's own errors
EXIT_CODES = {0: "success", 1: "the demo's outputs differ, or an internal error (a bug: please report it)",
              USAGE: "usage or configuration", DATA: "data", FILE: "adapter or weights file",
              FAILED: "the run failed", BUSY: "the folder is in use by another vitune process",
              INTERRUPTED: "interrupted (Ctrl-C)"}


def _own_code(error: VituneError) -> int:
    if error.exit_code != USAGE:
        return error.exit_code
    return FILE if isinstance(error, OSError) else USAGE  # AdapterFileError, WeightsFileError: files


def exit_code(error: BaseException) -> int:
    """The ``vitune`` exit code for `error` (EXIT_CODES).

    An error re-raised with more context (``raise RunError(f"--weights {path}: {e}") from None``) keeps the
    code of the error it was raised while handling, so a bad weights file is a file error wherever it surfaces.
    Any other OSError is a failed write or read (a full disk): 5.
    """
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, VituneError):
        code = _own_code(error)
        if code == USAGE and isinstance(error.__context__, VituneError):
            return exit_code(error.__context__)
        return code
    if isinstance(error, OSError):
        return FAILED
    return 1
