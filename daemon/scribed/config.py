"""Configuration: one YAML file validated into frozen dataclasses.

Contract:
- :func:`load_config` reads a YAML file (or the default path) and returns a :class:`Config`, or
  raises :class:`~scribed.errors.ConfigError` listing *every* problem at once, each as
  ``At 'section.key': expected ..., got ...`` (unknown keys get a did-you-mean).
- Every semantic rule lives here, once: value ranges, choices (output formats, log levels from
  :data:`scribed.logs.LEVELS`, ``source_after`` and ``hardlinked`` from :mod:`scribed.system.retention`),
  the model's languages (:func:`scribed.text.language_name`) and the rules between keys.
  :func:`overlay` puts command-line flags through the same checkers, so a bad flag gets the same
  ``At 'model.batch_size': ...`` message as a bad file.
- Missing keys take the defaults documented in ``config/scribed.yaml``; ``~`` and ``$VARS`` in
  paths are expanded by :func:`expand_path` (the one place that does it). Nothing here touches
  the network, the model or torch (standard library, yaml and loguru only).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import yaml

from scribed import logs, text
from scribed.errors import ConfigError
from scribed.system.retention import HARDLINKED, STRATEGIES

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json")


def xdg_dir(var: str, fallback: str) -> Path:
    """``$var`` if set and absolute, else ``~/fallback`` (XDG base directory rules)."""
    value = os.environ.get(var, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "scribed" / "config.yaml"


def expand_path(value: str | os.PathLike[str]) -> Path:
    """``~`` and ``$VARS`` expanded (not made absolute, links not resolved)."""
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(value))))


# --- checkers ---------------------------------------------------------------------------------
# A checker takes the raw YAML value and returns the converted value, or raises _Bad with what
# was expected. Keeping checkers tiny and composable lets us report every error in one pass.


class _Bad(Exception):
    pass


Checker = Callable[[Any], Any]


def _describe(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _number(minimum: float | None = None, maximum: float | None = None, *, kind: type = float) -> Checker:
    noun = "an integer" if kind is int else "a number"

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
            raise _Bad(f"expected {noun}")
        if minimum is not None and value < minimum:
            raise _Bad(f"expected {noun} >= {minimum}")
        if maximum is not None and value > maximum:
            raise _Bad(f"expected {noun} <= {maximum}")
        return kind(value)

    return check


def _integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    return _number(minimum, maximum, kind=int)


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


def _choice(*options: str, norm: Callable[[str], str] = str.lower) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, str) or norm(value.strip()) not in options:
            raise _Bad("expected one of " + ", ".join(options))
        return norm(value.strip())

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
    name = _string(value).strip().lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise _Bad("expected auto, cpu, cuda or cuda:N")


def _language(value: Any) -> str:
    name = _nonempty_string(value)
    try:
        text.language_name(name)
    except ValueError as exc:
        raise _Bad(f"expected a language the model knows: {exc}") from None
    return name


def _off_or(inner: Checker) -> Checker:
    """YAML 1.1 reads a bare ``off`` as false: accept it as the string the user meant."""

    def check(value: Any) -> Any:
        return inner("off" if value is False else value)

    return check


def _speakers(value: Any) -> str | int:
    """``off``, ``auto`` or a known number of speakers."""
    if isinstance(value, str) and value.strip().lower() in ("off", "auto"):
        return value.strip().lower()
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise _Bad("expected off, auto or a number of speakers from 1 to 32")
    return value


def _broker(value: Any) -> str:
    """A Redis URL (``redis://`` or ``rediss://`` for TLS); the password never goes here."""
    url = _nonempty_string(value)
    if not url.startswith(("redis://", "rediss://")):
        raise _Bad("expected a redis:// or rediss:// URL")
    return url


def _path_map(value: Any) -> dict[str, Path]:
    """Coordinator path prefix -> this host's mount point."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad("expected a mapping of 'coordinator path: local path'")
    return {str(_path(k)): _path(v) for k, v in value.items()}


def _text(value: Any) -> str:
    return "" if value is None else _string(value)


# --- the schema: one dataclass per section; each key's checker annotates it, next to its default ---


@dataclass(frozen=True)
class WatchConfig:
    folders: Annotated[tuple[Path, ...], _list_of(_path, nonempty=True)] = (expand_path("~/Meetings/inbox"),)
    recursive: Annotated[bool, _boolean] = True
    polling: Annotated[str, _choice("auto", "always", "never")] = "auto"
    poll_interval_s: Annotated[float, _number(0.1, 86400)] = 10.0
    settle_s: Annotated[float, _number(0, 3600)] = 5.0
    rescan_interval_s: Annotated[float, _number(0, 86400)] = 300.0
    ignore: Annotated[tuple[str, ...], _list_of(_nonempty_string)] = ()
    max_depth: Annotated[int, _integer(1, 256)] = 32  # subfolder levels looked into (bounded: watchdog recurses)


@dataclass(frozen=True)
class ModelConfig:
    id: Annotated[str, _nonempty_string] = "Qwen/Qwen3-ASR-0.6B-hf"
    backend: Annotated[str, _choice("transformers")] = "transformers"  # the engine implementation
    aligner_id: Annotated[str, _nonempty_string] = "Qwen/Qwen3-ForcedAligner-0.6B-hf"  # word timestamps
    device: Annotated[str, _device] = "auto"
    dtype: Annotated[str, _choice("auto", "float32", "bfloat16", "float16")] = "auto"
    batch_size: Annotated[int, _integer(1, 1024)] = 16
    idle_unload_min: Annotated[float, _number(0)] = 30.0
    cache_dir: Annotated[Path | None, _optional(_path)] = None


@dataclass(frozen=True)
class TranscriptionConfig:
    language: Annotated[str, _language] = "auto"
    context: Annotated[str, _text] = ""
    glossary: Annotated[Mapping[str, str], _glossary] = field(default_factory=dict)
    max_chunk_s: Annotated[float, _number(2, 1200)] = 30.0
    timestamps: Annotated[bool, _boolean] = False
    paragraph_pause_s: Annotated[float, _number(0.1)] = 3.0
    max_duration_s: Annotated[float, _number(1, 7 * 86400)] = 6 * 3600.0  # decompression bombs fail clearly
    speakers: Annotated[str | int, _off_or(_speakers)] = "off"  # off | auto | N
    min_speakers: Annotated[int | None, _optional(_integer(1, 32))] = None  # bounds for auto
    max_speakers: Annotated[int | None, _optional(_integer(1, 32))] = None
    word_timestamps: Annotated[bool, _boolean] = False  # needs the aligner model


@dataclass(frozen=True)
class OutputConfig:
    formats: Annotated[tuple[str, ...], _formats] = ("txt",)
    dir: Annotated[Path | None, _optional(_path)] = None
    overwrite: Annotated[bool, _boolean] = False
    failure_marker: Annotated[bool, _boolean] = True


@dataclass(frozen=True)
class PolicyConfig:
    intermediates: Annotated[str, _choice("memory", "tmpfs")] = "memory"
    temp_dir: Annotated[Path | None, _optional(_path)] = None
    secure_delete_passes: Annotated[int, _integer(0, 35)] = 1
    source_after: Annotated[str, _choice(*STRATEGIES)] = "keep"
    archive_dir: Annotated[Path | None, _optional(_path)] = None
    block_network: Annotated[bool, _boolean] = True
    hardlinked: Annotated[str, _choice(*HARDLINKED)] = "unlink"  # a multiply-linked recording is never overwritten


@dataclass(frozen=True)
class ServiceConfig:
    state_dir: Annotated[Path | None, _optional(_path)] = None
    log_level: Annotated[str, _choice(*logs.LEVELS, norm=str.upper)] = "INFO"
    attempts: Annotated[int, _integer(1, 100)] = 3
    stop_timeout_s: Annotated[float, _number(0)] = 600.0
    notify: Annotated[str, _off_or(_choice("off", "desktop"))] = "off"  # desktop notifications over the session D-Bus

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or xdg_dir("XDG_STATE_HOME", ".local/state") / "scribed"

    @property
    def journal_path(self) -> Path:
        return self.resolved_state_dir / "journal.sqlite3"


@dataclass(frozen=True)
class ClusterConfig:
    broker: Annotated[str | None, _optional(_broker)] = None  # None: single host, the embedded worker
    password_file: Annotated[Path | None, _optional(_path)] = None  # else $SCRIBED_BROKER_PASSWORD
    queue: Annotated[str, _nonempty_string] = "scribed"
    path_map: Annotated[Mapping[str, Path], _path_map] = field(default_factory=dict)
    visibility_timeout_s: Annotated[float, _number(60, 7 * 86400)] = 12 * 3600.0
    prefetch: Annotated[int, _integer(1, 64)] = 2


@dataclass(frozen=True)
class Config:
    watch: WatchConfig = field(default_factory=WatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    source: str | None = None  # the file it was loaded from, for messages


def _checkers(cls: type) -> dict[str, Checker]:
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name].__metadata__[0] for f in dataclasses.fields(cls)}


# section name -> (its dataclass, key -> checker), read from the annotations above.
SCHEMA: dict[str, tuple[type, dict[str, Checker]]] = {
    f.name: (f.default_factory, _checkers(f.default_factory))  # type: ignore[arg-type]
    for f in dataclasses.fields(Config)
    if f.name != "source"
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


def _check_sections(data: Any) -> dict[str, dict[str, Any]]:
    """Raw ``{section: {key: value}}`` -> checked values per section; ConfigError lists every problem."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["At top level: expected a mapping of sections"])
    sections: dict[str, dict[str, Any]] = {}
    for name, raw in data.items():
        if name not in SCHEMA:
            problems.append(f"At '{name}': unknown section{_did_you_mean(str(name), list(SCHEMA))}")
            continue
        checkers = SCHEMA[name][1]
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"At '{name}': expected a mapping, got {_describe(raw)}")
            continue
        values = sections.setdefault(name, {})
        for key, value in raw.items():
            if key not in checkers:
                problems.append(f"At '{name}.{key}': unknown key{_did_you_mean(str(key), list(checkers))}")
                continue
            try:
                values[key] = checkers[key](value)
            except _Bad as exc:
                problems.append(f"At '{name}.{key}': {exc}, got {_describe(value)}")
    if problems:
        raise ConfigError(problems)
    return sections


def _validated(build: Callable[[dict[str, dict[str, Any]]], Config], data: Any, source: str | None) -> Config:
    try:
        cfg = build(_check_sections(data))
    except ConfigError as exc:
        raise ConfigError(exc.problems, source) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def parse_config(data: Any, source: str | None = None) -> Config:
    """Validate already-parsed YAML data into a :class:`Config` (raises ConfigError with all problems)."""

    def build(sections: dict[str, dict[str, Any]]) -> Config:
        return Config(**{name: SCHEMA[name][0](**values) for name, values in sections.items()}, source=source)

    return _validated(build, data, source)


def overlay(cfg: Config, data: Mapping[str, Mapping[str, Any]], source: str = "command-line options") -> Config:
    """``cfg`` with raw values (e.g. from CLI flags) laid over it, checked exactly like a config file.

    ``data`` is ``{section: {key: raw value}}``; ``None`` values mean "not given" and are skipped.
    Raises ConfigError naming each bad ``section.key`` (the rules between keys are checked again).
    """
    given = {name: {k: v for k, v in values.items() if v is not None} for name, values in data.items()}
    return _validated(lambda sections: replace(cfg, **sections), given, source)


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
