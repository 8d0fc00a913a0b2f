"""The config's rules: value checkers for single keys, and the checks between keys.

Contract:
- A checker takes a raw YAML value and returns the converted value, or raises :class:`Bad` saying
  what was expected (the caller adds where and what it got). A checker that finds several problems
  at once (a list of folder mappings) raises :class:`Problems`, each at its own key path below the
  key. A checker whose value fills several fields of its section returns :class:`Fields`.
- :func:`cross_checks` returns the problems between keys (and between a folder's own settings
  and the sections'), each as ``At 'key.path': ...``.
- Every choice comes from its one definition (output formats here, levels from :mod:`scribed.logs`,
  retention strategies from :mod:`scribed.system.retention`, languages from :mod:`scribed.text`).
  Standard library and scribed's light modules only.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scribed import text

if TYPE_CHECKING:
    from scribed.config import Config

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json")

Checker = Callable[[Any], Any]


class Bad(Exception):
    """What a checker expected (the message reads "expected ...")."""


class Problems(Exception):
    """Several problems below one key: ``items`` are (key path suffix such as ``[2].language``, message)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        super().__init__(f"{len(items)} problem(s)")
        self.items = items


class Fields(dict[str, Any]):
    """A checker's result that sets several fields of its section (``{field: value}``)."""


def expand_path(value: str | os.PathLike[str]) -> Path:
    """``~`` and ``$VARS`` expanded (not made absolute, links not resolved)."""
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(value))))


def describe(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(options)})"


# -- single values ------------------------------------------------------------------------------
def number(minimum: float | None = None, maximum: float | None = None, *, kind: type = float) -> Checker:
    noun = "an integer" if kind is int else "a number"

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
            raise Bad(f"expected {noun}")
        if minimum is not None and value < minimum:
            raise Bad(f"expected {noun} >= {minimum}")
        if maximum is not None and value > maximum:
            raise Bad(f"expected {noun} <= {maximum}")
        return kind(value)

    return check


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    return number(minimum, maximum, kind=int)


def auto_or(inner: Checker, expected: str) -> Checker:
    """``auto`` (any case), or a value ``inner`` accepts; ``expected`` names those for a string."""

    def check(value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() == "auto":
                return "auto"
            raise Bad(f"expected auto or {expected}")
        return inner(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad("expected true or false")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad("expected a string")
    return value


def nonempty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Bad("expected a non-empty string")
    return value.strip()


def choice(*options: str, norm: Callable[[str], str] = str.lower) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, str) or norm(value.strip()) not in options:
            raise Bad("expected one of " + ", ".join(options))
        return norm(value.strip())

    return check


def path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise Bad("expected a path")
    return expand_path(value.strip())


def optional(inner: Checker) -> Checker:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def list_of(inner: Checker, *, nonempty: bool = False) -> Checker:
    def check(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise Bad("expected a list")
        if nonempty and not value:
            raise Bad("expected a non-empty list")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(inner(item))
            except Bad as exc:
                raise Bad(f"item {i}: {exc}") from None
        return tuple(out)

    return check


def formats(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    items = list_of(choice(*OUTPUT_FORMATS), nonempty=True)(value)
    return tuple(dict.fromkeys(items))  # de-duplicate, keep order


def glossary(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Bad("expected a mapping of 'heard: written' strings")
    out: dict[str, str] = {}
    for key, repl in value.items():
        if not isinstance(key, str) or not key or not isinstance(repl, str):
            raise Bad(f"expected string: string entries, got {describe(key)}: {describe(repl)}")
        out[key] = repl
    return out


def device(value: Any) -> str:
    name = string(value).strip().lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise Bad("expected auto, cpu, cuda or cuda:N")


def language(value: Any) -> str:
    name = nonempty_string(value)
    try:
        text.language_name(name)
    except ValueError as exc:
        raise Bad(f"expected a language the model knows: {exc}") from None
    return name


def off_or(inner: Checker) -> Checker:
    """YAML 1.1 reads a bare ``off`` as false: accept it as the string the user meant."""

    def check(value: Any) -> Any:
        return inner("off" if value is False else value)

    return check


def speakers(value: Any) -> str | int:
    """``off``, ``auto`` or a known number of speakers."""
    if isinstance(value, str) and value.strip().lower() in ("off", "auto"):
        return value.strip().lower()
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise Bad("expected off, auto or a number of speakers from 1 to 32")
    return value


def broker(value: Any) -> str:
    """A Redis URL (``redis://`` or ``rediss://`` for TLS); the password never goes here."""
    url = nonempty_string(value)
    if not url.startswith(("redis://", "rediss://")):
        raise Bad("expected a redis:// or rediss:// URL")
    return url


def path_map(value: Any) -> dict[str, Path]:
    """Coordinator path prefix -> this host's mount point."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Bad("expected a mapping of 'coordinator path: local path'")
    return {str(path(k)): path(v) for k, v in value.items()}


def optional_text(value: Any) -> str:
    return "" if value is None else string(value)


# -- watch.folders: paths, or mappings with the settings for the recordings below ---------------
def watched_folders(per_folder: Callable[[], Mapping[str, Checker]]) -> Checker:
    """``watch.folders``: a path or a list of paths and ``{path: ..., KEY: value}`` mappings.

    ``per_folder()`` gives the checker of each key a folder may set (called when checking: the
    schema that holds them is built after this). Returns ``Fields(folders=paths,
    overrides={path: {key: checked value}})``; raises :class:`Problems` listing every bad entry
    and key (``[2].language``), and a folder listed twice.
    """

    def check(value: Any) -> Fields:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise Bad("expected a list of folders")
        if not items:
            raise Bad("expected a non-empty list")
        keys = per_folder()
        problems: list[tuple[str, str]] = []
        paths: list[Path] = []
        overrides: dict[Path, dict[str, Any]] = {}
        for i, item in enumerate(items):
            settings: dict[str, Any] = {}
            raw = item
            if isinstance(item, dict):
                raw = item.get("path")
                for key, given in item.items():
                    if key == "path":
                        continue
                    if key not in keys:
                        problems.append((f"[{i}].{key}", f"unknown key{did_you_mean(str(key), ['path', *keys])}"))
                        continue
                    try:
                        settings[key] = keys[key](given)
                    except Bad as exc:
                        problems.append((f"[{i}].{key}", f"{exc}, got {describe(given)}"))
                if "path" not in item:
                    problems.append((f"[{i}]", f"expected a mapping with a 'path' key, got {describe(item)}"))
                    continue
            elif not isinstance(item, str):
                problems.append((f"[{i}]", f"expected a path or a mapping with 'path', got {describe(item)}"))
                continue
            try:
                folder = path(raw)
            except Bad as exc:
                problems.append((f"[{i}]" + (".path" if isinstance(item, dict) else ""), f"{exc}, got {describe(raw)}"))
                continue
            if folder in paths:
                problems.append((f"[{i}]", f"expected each folder once, got {str(folder)!r} again "
                                           f"(also entry [{paths.index(folder)}])"))
                continue
            paths.append(folder)
            if settings:
                overrides[folder] = settings
        if problems:
            raise Problems(problems)
        return Fields(folders=tuple(paths), overrides=overrides)

    return check


# -- rules between keys -------------------------------------------------------------------------
def cross_checks(cfg: Config) -> list[str]:
    """Problems between keys; each folder is checked with the settings that apply to it."""
    watch, policy = cfg.watch, cfg.policy
    resolved = [folder.resolve() for folder in watch.folders]
    problems: list[str] = []
    for i, folder in enumerate(watch.folders):
        if resolved[i] in resolved[:i]:
            first = resolved.index(resolved[i])
            problems.append(f"At 'watch.folders[{i}]': expected each folder once, got {str(folder)!r}, the same "
                            f"folder as watch.folders[{first}] ({str(watch.folders[first])!r})")
        keys = watch.overrides.get(folder, {})
        archive = keys.get("archive_dir", policy.archive_dir)
        if keys.get("source_after", policy.source_after) == "archive" and archive is None:
            if keys.keys() & {"source_after", "archive_dir"}:
                problems.append(f"At 'watch.folders[{i}].archive_dir': expected a path when source_after is "
                                "'archive' (here or in policy.archive_dir)")
            else:
                problems.append("At 'policy.archive_dir': expected a path when policy.source_after is 'archive'")
        if "archive_dir" in keys and archive is not None:
            problems += _outside_watched(cfg, f"watch.folders[{i}].archive_dir", archive, resolved)
    if policy.archive_dir is not None:
        problems += _outside_watched(cfg, "policy.archive_dir", policy.archive_dir, resolved)
    return list(dict.fromkeys(problems))


def _outside_watched(cfg: Config, where: str, archive: Path, resolved: list[Path]) -> list[str]:
    """An archive inside a watched folder would have its recordings picked up again."""
    target = archive.resolve()
    return [f"At '{where}': expected a folder outside the watched folder {str(folder)!r}"
            " (archived recordings would be picked up again)"
            for folder, real in zip(cfg.watch.folders, resolved, strict=True)
            if target == real or (cfg.watch.recursive and target.is_relative_to(real))]
