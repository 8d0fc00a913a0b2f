"""For the system tests: run code in a fresh interpreter with scribed importable.

The network and process guards are process-wide and irreversible, so they are only ever
installed in such a child process, never in the pytest process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

DAEMON_DIR = Path(__file__).resolve().parents[3] / "daemon"
PYTHONPATH = os.pathsep.join(filter(None, [str(DAEMON_DIR), os.environ.get("PYTHONPATH")]))


def run_python(code: str, timeout: float = 60, *, prefix: Sequence[str] = (), cwd: Path | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter, after ``prefix`` (e.g. ``unshare -rn``);
    ``env`` is added to the environment."""
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
        cwd=cwd,
        check=False,
    )
