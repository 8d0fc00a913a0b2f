"""Process hardening: no core dumps, not dumpable."""

from __future__ import annotations

import ctypes
import resource
import sys

from loguru import logger

_PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """No core file and no ptrace-by-same-user for this process (best effort; Linux only).

    A core dump or a debugger attached to the worker would expose audio and transcripts. The
    dumpable flag is reset by exec, so a spawned worker must call this itself.
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        logger.debug("cannot set RLIMIT_CORE to 0: {}", exc)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_DUMPABLE, 0) failed: errno {}", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            logger.debug("prctl unavailable: {}", exc)


