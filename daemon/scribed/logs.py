"""Logging setup (loguru to stderr, which journald collects under systemd).

Contract: :func:`setup` may be called again (SIGHUP) to change the level. Under journald
(``JOURNAL_STREAM`` set) each line carries an ``<N>`` syslog priority prefix so ``journalctl -p``
filters work, and no timestamp (journald adds its own). Transcript text is only ever logged at
DEBUG by the callers.
"""

from __future__ import annotations

import os
import sys

from loguru import logger

_PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def _journald_format(record: dict) -> str:  # type: ignore[type-arg]
    return f"<{_PRIORITY.get(record['level'].name, 6)}>{{name}}: {{message}}\n{{exception}}"


def setup(level: str = "INFO", *, process: str = "scribed") -> None:
    logger.remove()
    if os.environ.get("JOURNAL_STREAM"):
        logger.add(sys.stderr, level=level, format=_journald_format, colorize=False)
    else:
        fmt = ("<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> "
               f"{process}[{{process}}] {{message}}")
        logger.add(sys.stderr, level=level, format=fmt, colorize=None, backtrace=False, diagnose=False)
