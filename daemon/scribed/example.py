"""The documented example config that ships inside the package, and ``scribed config init``.

Contract:
- :func:`example_config` is the text of ``scribed/data/scribed.yaml``, a byte-for-byte copy of
  the repository's ``config/scribed.yaml`` (a test compares them): every key, its default and a
  comment. Read with :mod:`importlib.resources`, so it works from a wheel, an sdist install or a
  source tree alike.
- :func:`init_config` writes it atomically to the given path or the user's config path
  (``$XDG_CONFIG_HOME/scribed/config.yaml``), creating the folder. An existing file (or anything
  else at that name) is never replaced without ``force``, and a symbolic link never at all: both
  are a :class:`~scribed.errors.UsageError` (exit 2) that says what to do.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from scribed.config import default_config_path, expand_path
from scribed.errors import OutputTaken, ScribedError, UsageError
from scribed.system import files

EXAMPLE_NAME = "scribed.yaml"


def example_config() -> bytes:
    """The shipped example config, exactly as in the package."""
    try:
        return resources.files("scribed").joinpath("data", EXAMPLE_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ScribedError(f"the example config {EXAMPLE_NAME} is missing from this installation") from exc


def init_config(path: Path | None = None, *, force: bool = False) -> Path:
    """Write the example config to ``path`` (default: the user's config path); returns where."""
    target = Path(os.path.abspath(expand_path(path))) if path is not None else default_config_path()
    text = example_config()
    if os.path.lexists(target):
        if os.path.islink(target):
            raise UsageError(f"{target} is a symbolic link; scribed never writes through one: "
                             "write to the file it points to with: scribed config init PATH")
        if not force:
            raise UsageError(f"{target} already exists; keep it, check it with `scribed check-config {target}`, "
                             "or replace it with the example: scribed config init --force")
    try:
        files.write_file(target, text, 0o666 & ~files.current_umask(), overwrite=force)
    except OutputTaken as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a read-only or forbidden folder: say which and why, as one line
        raise ScribedError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
