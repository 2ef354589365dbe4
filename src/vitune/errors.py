"""The exceptions vitune raises. Every message names the offending method, key, file or tensor."""


class VituneError(Exception):
    """Base class for every error vitune raises on bad input."""


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


class NotMergeableError(VituneError, TypeError):
    """Merging a method whose update is not linear in the backbone's weights."""


class DataError(VituneError, ValueError):
    """A dataset folder, split file, line, label or image that cannot be used; the message names it."""


class RunError(VituneError, RuntimeError):
    """A training run that cannot start or go on (a non-empty run folder without --resume, a NaN loss ...)."""
