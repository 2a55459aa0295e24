"""User-facing errors. The CLI prints these as one clear line (no traceback) and exits with 2.

Raise a `JaxtoolError` (or a subclass) for every mistake a user can make: a bad file, a missing
field, a wrong config key. The message names the file / row / field / key and what was expected.
"""


class JaxtoolError(Exception):
    """Base class of every error caused by user input rather than by a bug in jaxtool."""


class ConfigError(JaxtoolError, ValueError):
    """A config file or key=value override that does not fit the config dataclasses."""


class CheckpointError(JaxtoolError):
    """A model / checkpoint directory or file that cannot be read or written as asked."""


class DataError(JaxtoolError, ValueError):
    """A dataset row or file that does not fit the expected format."""
