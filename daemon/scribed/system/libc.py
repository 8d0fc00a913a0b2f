"""The C library, for the few calls Python does not wrap (prctl, madvise, malloc_trim).

Contract: :func:`libc` returns the process's own symbols (``ctypes.CDLL(None)``, errno kept), or
None where that cannot be loaded (not Linux/glibc). A caller checks ``hasattr`` for the function
it needs: musl, for one, has no ``malloc_trim``.

Why one place, and not ``ctypes.util.find_library("c")``: that probes ``ldconfig`` (and gcc, ld)
through a subprocess, which a hardened scribed process refuses (:mod:`scribed.system.harden`);
the symbols already loaded into the process are the C library it runs on.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def libc() -> Any:
    """The process's C library symbols, or None (see the module contract)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - not a platform with a dynamic C library
        return None
