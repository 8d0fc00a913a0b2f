"""``scribed doctor``: check this setup, one line per finding — ok, warn or fail — with the fix.

Contract:
- :func:`doctor_command` prints every finding as it is made and returns 0 when nothing failed,
  1 otherwise. A config that does not load is reported problem by problem and ends the run
  (the other checks need it).
- Checks, in order: the config; each watched folder (exists, readable, writable where scribed
  writes, its watch mode and why); the output, archive and state folders; inotify watches
  needed against ``fs.inotify.max_user_watches``; the model (and the aligner with
  ``word_timestamps``, the voice encoder with ``speakers``) present offline; the device and
  dtype that would be used and whether the service unit lets the GPU through; the systemd user
  manager, linger and the unit; the network guard (tested in a child process) and routes; free
  space beside the folders.
- Light: this module imports no heavy library. Whatever needs torch or the network guard runs
  in a child process (:mod:`scribed.doctor_host`), so doctor's own process stays unchanged.
- Read-only: doctor creates, changes and deletes nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from scribed.config import Config, FolderSettings, default_config_path, load_config
from scribed.errors import ConfigError, ModelError
from scribed.system.fstype import existing_ancestor, filesystem_type, is_network_filesystem

OK, WARN, FAIL = "ok", "warn", "fail"
WALK_CAP = 100_000  # folders counted at most for the inotify estimate (a bounded walk)
GB = 1e9


@dataclass(frozen=True)
class Finding:
    status: str  # ok | warn | fail
    topic: str
    message: str
    fix: str | None = None

    def line(self) -> str:
        return f"{self.status:<4} {self.topic}: {self.message}" + (f"; fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class Probes:
    """Where doctor looks; tests point these at fakes. The defaults are the real system."""

    systemctl: str = "systemctl"
    loginctl: str = "loginctl"
    max_user_watches: Path = Path("/proc/sys/fs/inotify/max_user_watches")
    gpu_nodes: str = "/dev/nvidia*"
    unit_dir: Path | None = None  # default: $XDG_CONFIG_HOME/systemd/user
    fail_below_bytes: float = 0.1 * GB
    warn_below_bytes: float = 1 * GB


def _q(path: Path) -> str:
    return shlex.quote(str(path))


# -- config -----------------------------------------------------------------------------------------


def check_config(path: Path | None) -> tuple[Config | None, list[Finding]]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        where = exc.source or str(path)
        return None, [Finding(FAIL, "config", p, f"edit {where} (all problems: scribed check-config {where})")
                      for p in exc.problems]
    if cfg.source is None:
        return cfg, [Finding(WARN, "config", f"no config file at {default_config_path()}; the defaults apply",
                             "scribed config init")]
    return cfg, [Finding(OK, "config", f"{cfg.source} is valid")]


# -- folders ----------------------------------------------------------------------------------------


def _writes_beside(cfg: Config, settings: FolderSettings) -> bool:
    """Whether scribed writes into the watched folder itself (transcripts, or retention)."""
    return settings.dir is None or settings.source_after != "keep"


def check_folder(cfg: Config, folder: Path) -> list[Finding]:
    settings = FolderSettings.of(cfg, folder)
    topic = f"folder {folder}"
    if not folder.exists():
        return [Finding(FAIL, topic, "does not exist", f"mkdir -p {_q(folder)}")]
    if not folder.is_dir():
        return [Finding(FAIL, topic, "is not a folder", "list a folder in watch.folders")]
    if not os.access(folder, os.R_OK | os.X_OK):
        return [Finding(FAIL, topic, "this user cannot list it",
                        f"chmod u+rx {_q(folder)}, or run scribed as its owner")]
    if _writes_beside(cfg, settings) and not os.access(folder, os.W_OK):
        return [Finding(FAIL, topic, "this user cannot write there (transcripts and failure notes go beside the "
                        "recordings)", f"chmod u+w {_q(folder)}, or set output.dir")]
    found = [Finding(OK, topic, "exists; readable" + (" and writable" if os.access(folder, os.W_OK) else ""))]
    return [*found, _watch_mode(cfg, folder)]


def _watch_mode(cfg: Config, folder: Path) -> Finding:
    fstype = filesystem_type(folder)
    network = is_network_filesystem(folder)
    topic = f"watch {folder}"
    every = f"every {cfg.watch.poll_interval_s:g} s"
    if cfg.watch.polling == "always":
        return Finding(OK, topic, f"polling {every} (watch.polling: always; {fstype} file system)")
    if network and cfg.watch.polling == "auto":
        return Finding(OK, topic, f"polling {every}: {fstype} is a network file system, where inotify misses "
                       "changes made by other machines")
    if network:
        return Finding(WARN, topic, f"inotify on a network file system ({fstype}): files written by other "
                       f"machines are seen only at the rescan every {cfg.watch.rescan_interval_s:g} s",
                       "set watch.polling: auto")
    return Finding(OK, topic, f"inotify ({fstype} is a local file system)")


def _creatable(path: Path) -> bool:
    """``path`` is a writable folder, or missing with a writable nearest existing ancestor."""
    base = existing_ancestor(path)
    return base.is_dir() and os.access(base, os.W_OK | os.X_OK)


def check_written_folders(cfg: Config) -> list[Finding]:
    named: dict[Path, str] = {}
    for folder in cfg.watch.folders:
        settings = FolderSettings.of(cfg, folder)
        if settings.dir is not None:
            named.setdefault(settings.dir, "output")
        if settings.archive_dir is not None and settings.source_after == "archive":
            named.setdefault(settings.archive_dir, "archive")
    if cfg.policy.temp_dir is not None and cfg.policy.intermediates == "tmpfs":
        named.setdefault(cfg.policy.temp_dir, "temp")
    named.setdefault(cfg.service.resolved_state_dir, "state")
    found = []
    for path, kind in named.items():
        if _creatable(path):
            what = "writable" if path.exists() else f"will be created in {existing_ancestor(path)}"
            found.append(Finding(OK, f"{kind} {path}", what))
        else:
            found.append(Finding(FAIL, f"{kind} {path}", "this user cannot write or create it",
                                 f"mkdir -p {_q(path)} && chmod u+w {_q(path)} (as a user who may)"))
    return found


# -- inotify ----------------------------------------------------------------------------------------


def count_folders(root: Path, max_depth: int, cap: int = WALK_CAP) -> tuple[int, bool]:
    """Folders at ``root`` and below it (``max_depth`` levels, links not followed); stops at
    ``cap``. Returns (count, capped)."""
    count, stack = 0, [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        count += 1
        if count >= cap:
            return count, True
        if depth >= max_depth:
            continue
        try:
            with os.scandir(folder) as entries:
                stack += [(Path(e.path), depth + 1) for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue  # unreadable: not watched either
    return count, False


def check_inotify(cfg: Config, probes: Probes) -> list[Finding]:
    roots = [f for f in cfg.watch.folders if f.is_dir() and cfg.watch.polling != "always"
             and not (cfg.watch.polling == "auto" and is_network_filesystem(f))]
    if not roots:
        return []
    needed, capped = 0, False
    for root in roots:
        n, hit = count_folders(root, cfg.watch.max_depth if cfg.watch.recursive else 0)
        needed, capped = needed + n, capped or hit
    shown = f"{'at least ' if capped else ''}{needed} folder(s) to watch"
    try:
        limit = int(probes.max_user_watches.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return [Finding(WARN, "inotify", f"{shown}; cannot read the limit ({probes.max_user_watches})")]
    fix = (f"sudo sysctl fs.inotify.max_user_watches={max(2 * needed, 65536)}, and the same line in "
           "/etc/sysctl.d/90-scribed.conf to keep it")
    if needed >= limit:
        return [Finding(WARN, "inotify", f"{shown} but fs.inotify.max_user_watches is {limit}: scribed falls back "
                        "to slower polling", fix)]
    if needed > limit // 2:
        return [Finding(WARN, "inotify", f"{shown} of fs.inotify.max_user_watches {limit}, which this user's "
                        "other programs share", fix)]
    return [Finding(OK, "inotify", f"{shown}; fs.inotify.max_user_watches is {limit}")]


# -- models -----------------------------------------------------------------------------------------


def _model(topic: str, model_id: str, cache_dir: Path | None) -> Finding:
    from scribed.engine.models import resolve_model  # light: no torch; huggingface_hub offline

    try:
        path = resolve_model(model_id, cache_dir)
    except ModelError as exc:
        pull = model_id.count("/") == 1 and not model_id.startswith((".", "/", "~"))
        fix = f"scribed model pull {model_id}" if pull else "set model.id to a model folder or a Hugging Face id"
        said = str(exc).splitlines()[0]
        return Finding(FAIL, topic, said.rsplit(". ", 1)[0] if said.endswith(":") else said, fix)
    if Path(os.path.expanduser(model_id)).resolve() == path:
        return Finding(OK, topic, f"model folder {path} is present")
    return Finding(OK, topic, f"{model_id} is available offline at {path}")


def check_models(cfg: Config) -> list[Finding]:
    found = [_model("model", cfg.model.id, cfg.model.cache_dir)]
    if cfg.transcription.word_timestamps:
        found.append(_model("aligner", cfg.model.aligner_id, cfg.model.cache_dir))
    return found


# -- free space ---------------------------------------------------------------------------------------


def check_space(cfg: Config, probes: Probes) -> list[Finding]:
    paths = [*cfg.watch.folders, *(FolderSettings.of(cfg, f).dir for f in cfg.watch.folders),
             cfg.service.resolved_state_dir]
    seen: dict[int, Path] = {}
    for path in paths:
        if path is None:
            continue
        base = existing_ancestor(path)
        try:
            seen.setdefault(os.stat(base).st_dev, base)
        except OSError:
            continue
    found = []
    for base in seen.values():
        free = shutil.disk_usage(base).free
        message = f"{free / GB:.1f} GB free on the file system of {base}"
        if free < probes.fail_below_bytes:
            found.append(Finding(FAIL, "space", message + ": transcripts and the journal cannot be written",
                                 "free some space there"))
        elif free < probes.warn_below_bytes:
            found.append(Finding(WARN, "space", message, "free some space there"))
        else:
            found.append(Finding(OK, "space", message))
    return found


# -- the run ----------------------------------------------------------------------------------------


def findings(config_path: Path | None, probes: Probes) -> Iterator[Finding]:
    from scribed import doctor_host

    cfg, found = check_config(config_path)
    yield from found
    if cfg is None:
        return
    for folder in cfg.watch.folders:
        yield from check_folder(cfg, folder)
    yield from check_written_folders(cfg)
    yield from check_inotify(cfg, probes)
    yield from check_models(cfg)
    yield from doctor_host.check_speakers(cfg)
    yield from doctor_host.check_device(cfg, probes.gpu_nodes, probes.unit_dir)
    yield from doctor_host.check_systemd(probes.systemctl, probes.loginctl, probes.unit_dir)
    yield from doctor_host.check_network(cfg, probes.unit_dir)
    yield from check_space(cfg, probes)


def doctor_command(config_path: Path | None, *, probes: Probes | None = None, out: TextIO | None = None) -> int:
    """Print each finding; 0 when none failed, 1 otherwise."""
    out = out or sys.stdout
    counts = {OK: 0, WARN: 0, FAIL: 0}
    for finding in findings(config_path, probes or Probes()):
        counts[finding.status] += 1
        print(finding.line(), file=out, flush=True)
    print(f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failure(s)", file=out)
    return 1 if counts[FAIL] else 0

