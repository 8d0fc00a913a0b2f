"""Logging setup (loguru to stderr, which journald collects under systemd).

Contract: :data:`LEVELS` is the one list of log levels (config validates ``service.log_level``
against it, the CLI's -v/-q step along it with :func:`shifted`). :func:`setup` may be called
again (SIGHUP) to change the level. Under journald
(``JOURNAL_STREAM`` set) each line carries an ``<N>`` syslog priority prefix so ``journalctl -p``
filters work, and no timestamp (journald adds its own). Transcript text is only ever logged at
DEBUG by the callers.
"""

from __future__ import annotations

import os
import sys

from loguru import logger

LEVELS: tuple[str, ...] = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")  # loguru's, by severity
_PRIORITY = dict(zip(LEVELS, (7, 7, 6, 5, 4, 3, 2), strict=True))  # syslog priorities for journald


def shifted(level: str, steps: int) -> str:
    """``level`` moved ``steps`` along :data:`LEVELS` (negative: more verbose), clamped at both ends.

    Raises ValueError for a level not in :data:`LEVELS` (config validation prevents that).
    """
    index = LEVELS.index(level.upper()) + steps
    return LEVELS[max(0, min(len(LEVELS) - 1, index))]


def _journald_format(record: dict) -> str:  # type: ignore[type-arg]
    # "\<" : loguru would otherwise read "<4>" as a colour tag and fail on every line.
    return f"\\<{_PRIORITY.get(record['level'].name, 6)}>{{name}}: {{message}}\n{{exception}}"


def setup(level: str = "INFO", *, process: str = "scribed") -> None:
    """Log to stderr at ``level`` (one of :data:`LEVELS`), replacing any earlier setup."""
    logger.remove()
    if os.environ.get("JOURNAL_STREAM"):
        logger.add(sys.stderr, level=level, format=_journald_format, colorize=False)
    else:
        fmt = ("<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> "
               f"{process}[{{process}}] {{message}}")
        logger.add(sys.stderr, level=level, format=fmt, colorize=None, backtrace=False, diagnose=False)
