"""Configuration: one YAML file validated into frozen dataclasses.

Contract:
- :func:`load_config` reads a YAML file (or the default path) and returns a :class:`Config`, or
  raises :class:`~scribed.errors.ConfigError` listing *every* problem at once, each as
  ``At 'section.key': expected ..., got ...`` (unknown keys get a did-you-mean).
- Missing keys take the defaults documented in ``config/scribed.yaml``; ``~`` and ``$VARS`` in
  paths are expanded. Nothing here touches the network, the model or torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scribed.errors import ConfigError

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json")


def xdg_dir(var: str, fallback: str) -> Path:
    """``$var`` if set and absolute, else ``~/fallback`` (XDG base directory rules)."""
    value = os.environ.get(var, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "scribed" / "config.yaml"


def expand_path(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


@dataclass(frozen=True)
class WatchConfig:
    folders: tuple[Path, ...] = (Path("~/Meetings/inbox").expanduser(),)
    recursive: bool = True
    polling: str = "auto"  # auto | always | never
    poll_interval_s: float = 10.0
    settle_s: float = 5.0
    rescan_interval_s: float = 300.0
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    id: str = "Qwen/Qwen3-ASR-0.6B-hf"
    backend: str = "transformers"  # the engine implementation (only transformers exists)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    batch_size: int = 16
    idle_unload_min: float = 30.0
    cache_dir: Path | None = None


@dataclass(frozen=True)
class TranscriptionConfig:
    language: str = "auto"
    context: str = ""
    glossary: Mapping[str, str] = field(default_factory=dict)
    max_chunk_s: float = 30.0
    timestamps: bool = False
    paragraph_pause_s: float = 3.0
    max_duration_s: float = 6 * 3600.0  # longer recordings fail with a clear error (decompression bombs)


@dataclass(frozen=True)
class OutputConfig:
    formats: tuple[str, ...] = ("txt",)
    dir: Path | None = None
    overwrite: bool = False
    failure_marker: bool = True


@dataclass(frozen=True)
class PolicyConfig:
    intermediates: str = "memory"  # memory | tmpfs
    temp_dir: Path | None = None
    secure_delete_passes: int = 1
    source_after: str = "keep"  # keep | archive | delete
    archive_dir: Path | None = None
    block_network: bool = True


@dataclass(frozen=True)
class ServiceConfig:
    state_dir: Path | None = None
    log_level: str = "INFO"
    attempts: int = 3
    stop_timeout_s: float = 600.0

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or xdg_dir("XDG_STATE_HOME", ".local/state") / "scribed"

    @property
    def journal_path(self) -> Path:
        return self.resolved_state_dir / "journal.sqlite3"


@dataclass(frozen=True)
class Config:
    watch: WatchConfig = field(default_factory=WatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    source: str | None = None  # the file it was loaded from, for messages


# --- validation -------------------------------------------------------------------------------
# A checker takes the raw YAML value and returns the converted value, or raises _Bad with what
# was expected. Keeping checkers tiny and composable lets us report every error in one pass.


class _Bad(Exception):
    pass


Checker = Callable[[Any], Any]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(minimum: float | None = None, maximum: float | None = None) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad("expected a number")
        if minimum is not None and value < minimum:
            raise _Bad(f"expected a number >= {minimum}")
        if maximum is not None and value > maximum:
            raise _Bad(f"expected a number <= {maximum}")
        return float(value)

    return check


def _integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("expected an integer")
        if minimum is not None and value < minimum:
            raise _Bad(f"expected an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise _Bad(f"expected an integer <= {maximum}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("expected true or false")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("expected a string")
    return value


def _nonempty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("expected a non-empty string")
    return value.strip()


def _choice(*options: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in options:
            raise _Bad("expected one of " + ", ".join(options))
        return value.strip().lower()

    return check


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("expected a path")
    return expand_path(value.strip())


def _optional(inner: Checker) -> Checker:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _list_of(inner: Checker, *, nonempty: bool = False) -> Checker:
    def check(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _Bad("expected a list")
        if nonempty and not value:
            raise _Bad("expected a non-empty list")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(inner(item))
            except _Bad as exc:
                raise _Bad(f"item {i}: {exc}") from None
        return tuple(out)

    return check


def _formats(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    items = _list_of(_choice(*OUTPUT_FORMATS), nonempty=True)(value)
    return tuple(dict.fromkeys(items))  # de-duplicate, keep order


def _glossary(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad("expected a mapping of 'heard: written' strings")
    out: dict[str, str] = {}
    for key, repl in value.items():
        if not isinstance(key, str) or not key or not isinstance(repl, str):
            raise _Bad(f"expected string: string entries, got {_describe(key)}: {_describe(repl)}")
        out[key] = repl
    return out


def _device(value: Any) -> str:
    text = _string(value).strip().lower()
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise _Bad("expected auto, cpu, cuda or cuda:N")


def _log_level(value: Any) -> str:
    levels = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
    if not isinstance(value, str) or value.strip().upper() not in levels:
        raise _Bad("expected one of " + ", ".join(levels))
    return value.strip().upper()


SCHEMA: dict[str, tuple[type, dict[str, Checker]]] = {
    "watch": (
        WatchConfig,
        {
            "folders": _list_of(_path, nonempty=True),
            "recursive": _boolean,
            "polling": _choice("auto", "always", "never"),
            "poll_interval_s": _number(0.1, 86400),
            "settle_s": _number(0, 3600),
            "rescan_interval_s": _number(0, 86400),
            "ignore": _list_of(_nonempty_string),
        },
    ),
    "model": (
        ModelConfig,
        {
            "id": _nonempty_string,
            "backend": _choice("transformers"),
            "device": _device,
            "dtype": _choice("auto", "float32", "bfloat16", "float16"),
            "batch_size": _integer(1, 1024),
            "idle_unload_min": _number(0),
            "cache_dir": _optional(_path),
        },
    ),
    "transcription": (
        TranscriptionConfig,
        {
            "language": _nonempty_string,
            "context": lambda v: "" if v is None else _string(v),
            "glossary": _glossary,
            "max_chunk_s": _number(2, 1200),
            "timestamps": _boolean,
            "paragraph_pause_s": _number(0.1),
            "max_duration_s": _number(1, 7 * 86400),
        },
    ),
    "output": (
        OutputConfig,
        {
            "formats": _formats,
            "dir": _optional(_path),
            "overwrite": _boolean,
            "failure_marker": _boolean,
        },
    ),
    "policy": (
        PolicyConfig,
        {
            "intermediates": _choice("memory", "tmpfs"),
            "temp_dir": _optional(_path),
            "secure_delete_passes": _integer(0, 35),
            "source_after": _choice("keep", "archive", "delete"),
            "archive_dir": _optional(_path),
            "block_network": _boolean,
        },
    ),
    "service": (
        ServiceConfig,
        {
            "state_dir": _optional(_path),
            "log_level": _log_level,
            "attempts": _integer(1, 100),
            "stop_timeout_s": _number(0),
        },
    ),
}


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(options)})"


def _cross_checks(cfg: Config) -> list[str]:
    """Rules that involve more than one key."""
    problems = []
    if cfg.policy.source_after == "archive" and cfg.policy.archive_dir is None:
        problems.append("At 'policy.archive_dir': expected a path when policy.source_after is 'archive'")
    if cfg.policy.archive_dir is not None:
        for folder in cfg.watch.folders:
            if cfg.policy.archive_dir.resolve().is_relative_to(folder.resolve()) and cfg.watch.recursive:
                problems.append(
                    f"At 'policy.archive_dir': expected a folder outside the watched folder {str(folder)!r}"
                    " (archived recordings would be picked up again)"
                )
    return problems


def parse_config(data: Any, source: str | None = None) -> Config:
    """Validate already-parsed YAML data into a :class:`Config` (raises ConfigError with all problems)."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["At top level: expected a mapping of sections"], source)
    sections: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in SCHEMA:
            problems.append(f"At '{name}': unknown section{_did_you_mean(str(name), list(SCHEMA))}")
            continue
        cls, checkers = SCHEMA[name]
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"At '{name}': expected a mapping, got {_describe(raw)}")
            continue
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in checkers:
                problems.append(f"At '{name}.{key}': unknown key{_did_you_mean(str(key), list(checkers))}")
                continue
            try:
                values[key] = checkers[key](value)
            except _Bad as exc:
                problems.append(f"At '{name}.{key}': {exc}, got {_describe(value)}")
        if not problems:
            sections[name] = cls(**values)
    if problems:
        raise ConfigError(problems, source)
    cfg = Config(**sections, source=source)
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path`` (default: the XDG config file; a missing default file means all defaults)."""
    explicit = path is not None
    file = Path(path) if explicit else default_config_path()
    if not file.exists():
        if explicit:
            raise ConfigError([f"At top level: config file {str(file)!r} does not exist"], str(file))
        return Config(source=None)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"At top level: invalid YAML{where}: {getattr(exc, 'problem', exc)}"], str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"At top level: cannot read {str(file)!r}: {exc}"], str(file)) from None
    return parse_config(data, str(file))


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return ``cfg`` with some keys overridden, e.g. ``replace(cfg, model={"device": "cpu"})``."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The effective config as plain YAML-able data (paths as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {name: plain(dataclasses.asdict(getattr(cfg, name))) for name in SCHEMA}
