"""The one exception hierarchy of scribed.

Every error a user can cause (bad config, unreadable recording, missing model) is a
:class:`ScribedError` with a message that names the thing and the reason, so the CLI can print
it as one line instead of a traceback. ``exit_code`` is the CLI exit status it maps to.
"""

from __future__ import annotations

from pathlib import Path


class ScribedError(Exception):
    """Base class: a clear, user-facing error."""

    exit_code = 1


class ConfigError(ScribedError):
    """The configuration is invalid; ``problems`` lists every problem found (exit 2)."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s){where}:\n{lines}")


class UsageError(ScribedError):
    """The command line was wrong or a feature is not available (exit 2)."""

    exit_code = 2


class AudioError(ScribedError):
    """A recording could not be decoded. Names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read audio {self.path!r}: {reason}")


class ModelError(ScribedError):
    """The model could not be found or loaded (exit 2): the message says how to fix it."""

    exit_code = 2


class TranscriptionError(ScribedError):
    """Transcribing one recording failed (the others go on)."""


class NetworkBlockedError(ScribedError, OSError):
    """A socket was refused by scribed's in-process network guard."""


class RecordingChanged(ScribedError):
    """The recording is no longer the file that was queued, or it changed while it was read.

    Not a failure of the recording: the job is re-queued for its new content.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"recording {self.path!r} changed: {reason}")


class OutputTaken(ScribedError):
    """An output name is held by something scribed may not replace (a symlink, a folder, a file
    it did not write); ``path`` and ``reason`` say which and why. Nothing was changed."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"not writing {self.path!r}: {reason}")


class TranscriptTaken(OutputTaken):
    """The output name is held by a regular file scribed did not write (another scribed sharing
    the folder, or a person): the same situation that skips a recording when it is found."""
