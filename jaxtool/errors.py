"""User-facing errors. The CLI prints these as one clear line (no traceback) and exits with 2.

Raise a `JaxtoolError` (or a subclass) for every mistake a user can make: a bad file, a missing
field, a wrong config key. The message names the file / row / field / key and what was expected.
`jaxtool.cli.main` is the one place that turns them into that line (`-v` shows the traceback).
"""

from __future__ import annotations


class JaxtoolError(Exception):
    """Base class of every error caused by user input rather than by a bug in jaxtool."""


class ConfigError(JaxtoolError, ValueError):
    """A config file or key=value override that does not fit the config dataclasses."""


class CheckpointError(JaxtoolError):
    """A model / checkpoint directory or file that cannot be read or written as asked."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint step whose files are missing, truncated or altered since they were written.

    `step` is the step number and `file` the first damaged file (relative to the step directory;
    None when the step as a whole could not be read). A resumed run falls back to the newest good
    step on this error (and only on this one: a step that is intact but does not fit the run is a
    plain `CheckpointError`)."""

    def __init__(self, message: str, step: int | None = None, file: str | None = None):
        super().__init__(message)
        self.step = step
        self.file = file


class DataError(JaxtoolError, ValueError):
    """A dataset row or file that does not fit the expected format."""


def json_error_text(e) -> str:
    """A `json.JSONDecodeError` as Python words it, "<what>: line L column C": its message can end
    in "starting at" / "at", which a caller's own "at char N" would double ("at at char")."""
    msg = str(getattr(e, "msg", e)).rstrip(": ")
    lineno, colno = getattr(e, "lineno", None), getattr(e, "colno", None)
    return f"{msg}: line {lineno} column {colno}" if lineno is not None else msg
