"""The names scribed gives files: within the 255-byte NAME_MAX, and recognisable temporaries.

Contract: :func:`fit_name` returns ``stem + suffix`` unchanged when it fits in ``NAME_MAX``
bytes; otherwise it cuts the stem on a UTF-8 character boundary and appends ``~`` and 8 hex
digits of the full stem's SHA-256 before the suffix, so the extension survives and two long
names that share a prefix still get different files. :func:`temp_name` makes a fresh hidden
temporary name for a file (``.NAME.scribed-XXXXXXXX.tmp``, the embedded name cut to fit) and
:func:`is_scribed_temp` recognises one. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets

NAME_MAX = 255  # bytes in one path component on every Linux file system scribed supports
_TEMP_MARK, _TEMP_SUFFIX = ".scribed-", ".tmp"
_TEMP_RE = re.compile(r"^\..+\.scribed-[A-Za-z0-9_]+\.tmp$", re.DOTALL)


def _cut_utf8(raw: bytes, limit: int) -> bytes:
    """The longest prefix of ``raw`` within ``limit`` bytes that does not split a UTF-8 character."""
    cut = max(0, min(limit, len(raw)))
    while 0 < cut < len(raw) and (raw[cut] & 0xC0) == 0x80:
        cut -= 1  # a continuation byte: the character started earlier
    return raw[:cut]


def fit_name(stem: str, suffix: str = "", limit: int = NAME_MAX) -> str:
    """``stem + suffix`` if it fits in ``limit`` bytes, else a shortened stem, ``~``, 8 hex digits
    of the full stem's SHA-256, and ``suffix`` (so two long names that share a prefix still differ).

    Works on the file system's bytes (``os.fsencode``), so undecodable names are cut too.
    """
    raw, tail = os.fsencode(stem), os.fsencode(suffix)
    if len(raw) + len(tail) <= limit:
        return stem + suffix
    tag = b"~" + hashlib.sha256(raw).hexdigest()[:8].encode()
    return os.fsdecode(_cut_utf8(raw, limit - len(tail) - len(tag)) + tag + tail)


def temp_name(name: str) -> str:
    """A fresh hidden temporary name for ``name`` (``.NAME.scribed-XXXXXXXX.tmp``), within NAME_MAX."""
    token = secrets.token_hex(4)
    room = NAME_MAX - 1 - len(_TEMP_MARK) - len(token) - len(_TEMP_SUFFIX)
    short = os.fsdecode(_cut_utf8(os.fsencode(name), room)) or "x"
    return f".{short}{_TEMP_MARK}{token}{_TEMP_SUFFIX}"


def is_scribed_temp(name: str) -> bool:
    """True for scribed's own temporaries (ignored by the watcher, wiped after a crash)."""
    return bool(_TEMP_RE.match(name))
