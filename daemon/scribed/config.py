"""Configuration: one YAML file validated into frozen dataclasses.

Contract:
- :func:`load_config` reads a YAML file (or the default path) and returns a :class:`Config`, or
  raises :class:`~scribed.errors.ConfigError` listing *every* problem at once, each as
  ``At 'section.key': expected ..., got ...`` (unknown keys get a did-you-mean).
- Each key's rule is the checker annotating it here (the checkers and the rules between keys
  live in :mod:`scribed.checks`). :func:`overlay` puts command-line flags through the same
  checkers, so a bad flag gets the same ``At 'model.batch_size': ...`` message as a bad file.
- Per-folder settings: a ``watch.folders`` entry may be a mapping ``{path: ..., KEY: value}``
  where each KEY of :data:`FOLDER_KEYS` is checked exactly like the section key of the same
  name. :meth:`Config.settings_for` gives the :class:`FolderSettings` of a recording: the
  innermost listed folder that holds it sets its keys, every other key comes from its section
  (a folder's ``glossary`` is added to ``transcription.glossary``, its entries winning).
- Missing keys take the defaults documented in ``config/scribed.yaml``; ``~`` and ``$VARS`` in
  paths are expanded by :func:`expand_path` (the one place that does it). Nothing here touches
  the network, the model or torch (standard library, yaml and loguru only).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import yaml

from scribed import checks as c
from scribed import logs
from scribed.checks import OUTPUT_FORMATS, expand_path
from scribed.errors import ConfigError
from scribed.system.retention import HARDLINKED, STRATEGIES

__all__ = ["FOLDER_CHECKERS", "FOLDER_KEYS", "OUTPUT_FORMATS", "SCHEMA", "ClusterConfig", "Config", "FolderSettings",
           "ModelConfig", "OutputConfig", "PolicyConfig", "ServiceConfig", "TranscriptionConfig", "WatchConfig",
           "default_config_path", "expand_path", "load_config", "overlay", "parse_config", "replace", "to_dict",
           "xdg_dir"]


def xdg_dir(var: str, fallback: str) -> Path:
    """``$var`` if set and absolute, else ``~/fallback`` (XDG base directory rules)."""
    value = os.environ.get(var, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "scribed" / "config.yaml"


# --- the schema: one dataclass per section; each key's checker annotates it, next to its default ---


# watch.folders: paths or {path, KEY: value} mappings; fills ``folders`` and ``overrides``. The
# per-folder keys' checkers are the sections' own, looked up when a config is checked.
_folders = c.watched_folders(lambda: FOLDER_CHECKERS)


@dataclass(frozen=True)
class WatchConfig:
    folders: Annotated[tuple[Path, ...], _folders] = (expand_path("~/Meetings/inbox"),)
    recursive: Annotated[bool, c.boolean] = True
    polling: Annotated[str, c.choice("auto", "always", "never")] = "auto"
    poll_interval_s: Annotated[float, c.number(0.1, 86400)] = 10.0
    settle_s: Annotated[float, c.number(0, 3600)] = 5.0
    rescan_interval_s: Annotated[float, c.number(0, 86400)] = 300.0
    ignore: Annotated[tuple[str, ...], c.list_of(c.nonempty_string)] = ()
    max_depth: Annotated[int, c.integer(1, 256)] = 32  # subfolder levels looked into (bounded: watchdog recurses)
    # folder -> the FOLDER_KEYS its mapping entry sets (checked values); not a key of its own
    overrides: Mapping[Path, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    id: Annotated[str, c.nonempty_string] = "Qwen/Qwen3-ASR-0.6B-hf"
    backend: Annotated[str, c.choice("transformers")] = "transformers"  # the engine implementation
    aligner_id: Annotated[str, c.nonempty_string] = "Qwen/Qwen3-ForcedAligner-0.6B-hf"  # word timestamps
    device: Annotated[str, c.device] = "auto"
    dtype: Annotated[str, c.choice("auto", "float32", "bfloat16", "float16")] = "auto"
    # auto: the engine's choice for its device (engine.qwen3.AUTO_BATCH_SIZE); a number caps it
    batch_size: Annotated[int | str, c.auto_or(c.integer(1, 1024), "an integer from 1 to 1024")] = "auto"
    idle_unload_min: Annotated[float, c.number(0)] = 30.0
    cache_dir: Annotated[Path | None, c.optional(c.path)] = None


@dataclass(frozen=True)
class TranscriptionConfig:
    language: Annotated[str, c.language] = "auto"
    context: Annotated[str, c.optional_text] = ""
    glossary: Annotated[Mapping[str, str], c.glossary] = field(default_factory=dict)
    max_chunk_s: Annotated[float, c.number(2, 1200)] = 30.0
    timestamps: Annotated[bool, c.boolean] = False
    paragraph_pause_s: Annotated[float, c.number(0.1)] = 3.0
    max_duration_s: Annotated[float, c.number(1, 7 * 86400)] = 6 * 3600.0  # decompression bombs fail clearly
    speakers: Annotated[str | int, c.off_or(c.speakers)] = "off"  # off | auto | N
    min_speakers: Annotated[int | None, c.optional(c.integer(1, 32))] = None  # bounds for auto
    max_speakers: Annotated[int | None, c.optional(c.integer(1, 32))] = None
    word_timestamps: Annotated[bool, c.boolean] = False  # needs the aligner model


@dataclass(frozen=True)
class OutputConfig:
    formats: Annotated[tuple[str, ...], c.formats] = ("txt",)
    dir: Annotated[Path | None, c.optional(c.path)] = None
    overwrite: Annotated[bool, c.boolean] = False
    failure_marker: Annotated[bool, c.boolean] = True


@dataclass(frozen=True)
class PolicyConfig:
    intermediates: Annotated[str, c.choice("memory", "tmpfs")] = "memory"
    temp_dir: Annotated[Path | None, c.optional(c.path)] = None
    secure_delete_passes: Annotated[int, c.integer(0, 35)] = 1
    source_after: Annotated[str, c.choice(*STRATEGIES)] = "keep"
    archive_dir: Annotated[Path | None, c.optional(c.path)] = None
    block_network: Annotated[bool, c.boolean] = True
    hardlinked: Annotated[str, c.choice(*HARDLINKED)] = "unlink"  # a multiply-linked recording is never overwritten


@dataclass(frozen=True)
class ServiceConfig:
    state_dir: Annotated[Path | None, c.optional(c.path)] = None
    log_level: Annotated[str, c.choice(*logs.LEVELS, norm=str.upper)] = "INFO"
    attempts: Annotated[int, c.integer(1, 100)] = 3
    stop_timeout_s: Annotated[float, c.number(0)] = 600.0
    notify: Annotated[str, c.off_or(c.choice("off", "desktop"))] = "off"  # desktop notifications over the session D-Bus

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or xdg_dir("XDG_STATE_HOME", ".local/state") / "scribed"

    @property
    def journal_path(self) -> Path:
        return self.resolved_state_dir / "journal.sqlite3"


@dataclass(frozen=True)
class ClusterConfig:
    broker: Annotated[str | None, c.optional(c.broker)] = None  # None: single host, the embedded worker
    password_file: Annotated[Path | None, c.optional(c.path)] = None  # else $SCRIBED_BROKER_PASSWORD
    queue: Annotated[str, c.nonempty_string] = "scribed"
    path_map: Annotated[Mapping[str, Path], c.path_map] = field(default_factory=dict)
    visibility_timeout_s: Annotated[float, c.number(5, 7 * 86400)] = 12 * 3600.0
    prefetch: Annotated[int, c.integer(1, 64)] = 8  # recordings per broker message, transcribed together
    tls_ca_file: Annotated[Path | None, c.optional(c.path)] = None  # rediss://: CA of the broker's certificate


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

    def settings_for(self, recording: Path) -> FolderSettings:
        """What applies to ``recording``: the keys of the innermost listed folder holding it over
        the sections' values (a plain entry, or no folder at all, sets nothing)."""
        folder = _folder_of(self.watch.folders, recording)
        return FolderSettings.of(self, folder)


# per-folder key -> the section whose key of the same name it overrides (and whose checker it uses)
FOLDER_KEYS: dict[str, str] = {
    "language": "transcription", "context": "transcription", "glossary": "transcription",
    "speakers": "transcription", "timestamps": "transcription",
    "formats": "output", "dir": "output", "source_after": "policy", "archive_dir": "policy",
}


@dataclass(frozen=True)
class FolderSettings:
    """The settings in effect for the recordings of one watched folder (``folder`` None: outside
    every listed folder, the sections' values). One field per :data:`FOLDER_KEYS` key."""

    folder: Path | None
    language: str
    context: str
    glossary: Mapping[str, str]
    speakers: str | int
    timestamps: bool
    formats: tuple[str, ...]
    dir: Path | None
    source_after: str
    archive_dir: Path | None

    @classmethod
    def of(cls, cfg: Config, folder: Path | None) -> FolderSettings:
        keys = cfg.watch.overrides.get(folder, {}) if folder is not None else {}
        values = {key: keys.get(key, getattr(getattr(cfg, section), key)) for key, section in FOLDER_KEYS.items()}
        values["glossary"] = {**cfg.transcription.glossary, **keys.get("glossary", {})}
        return cls(folder, **values)


def _folder_of(folders: tuple[Path, ...], recording: Path) -> Path | None:
    """The innermost of ``folders`` holding ``recording``, as listed or with its links resolved
    (the watcher reports recordings below the resolved folders)."""
    best, depth = None, -1
    for folder in folders:
        for form in {Path(os.path.abspath(folder)), folder.resolve()}:
            if recording.is_relative_to(form) and len(form.parts) > depth:
                best, depth = folder, len(form.parts)
    return best


def _checkers(cls: type) -> dict[str, c.Checker]:
    """The YAML keys of a section: its fields annotated with a checker."""
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name].__metadata__[0] for f in dataclasses.fields(cls)
            if hasattr(hints[f.name], "__metadata__")}


# section name -> (its dataclass, key -> checker), read from the annotations above.
SCHEMA: dict[str, tuple[type, dict[str, c.Checker]]] = {
    f.name: (f.default_factory, _checkers(f.default_factory))  # type: ignore[arg-type]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}
FOLDER_CHECKERS: dict[str, c.Checker] = {key: SCHEMA[section][1][key] for key, section in FOLDER_KEYS.items()}


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
            problems.append(f"At '{name}': unknown section{c.did_you_mean(str(name), list(SCHEMA))}")
            continue
        checkers = SCHEMA[name][1]
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"At '{name}': expected a mapping, got {c.describe(raw)}")
            continue
        values = sections.setdefault(name, {})
        for key, value in raw.items():
            if key not in checkers:
                problems.append(f"At '{name}.{key}': unknown key{c.did_you_mean(str(key), list(checkers))}")
                continue
            try:
                checked = checkers[key](value)
            except c.Problems as exc:
                problems += [f"At '{name}.{key}{where}': {what}" for where, what in exc.items]
                continue
            except c.Bad as exc:
                problems.append(f"At '{name}.{key}': {exc}, got {c.describe(value)}")
                continue
            if isinstance(checked, c.Fields):
                values.update(checked)
            else:
                values[key] = checked
    if problems:
        raise ConfigError(problems)
    return sections


def _validated(build: Callable[[dict[str, dict[str, Any]]], Config], data: Any, source: str | None) -> Config:
    try:
        cfg = build(_check_sections(data))
    except ConfigError as exc:
        raise ConfigError(exc.problems, source) from None
    problems = c.cross_checks(cfg)
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
    """The effective config as plain YAML-able data (paths as strings). A folder with settings of
    its own is shown as a mapping with every per-folder key's effective value (its own, else its
    section's; glossaries merged), so the output loads back into the same settings."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    out = {name: plain(dataclasses.asdict(getattr(cfg, name))) for name in SCHEMA}
    del out["watch"]["overrides"]
    out["watch"]["folders"] = [
        {"path": str(folder), **plain({k: v for k, v in dataclasses.asdict(FolderSettings.of(cfg, folder)).items()
                                       if k != "folder"})}
        if folder in cfg.watch.overrides else str(folder)
        for folder in cfg.watch.folders
    ]
    return out
