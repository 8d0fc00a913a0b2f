"""``scribed service install|uninstall|status|unit``: run scribed as a systemd user service.

Contract of :func:`service_command`: returns the CLI exit status and prints what it did.
``install`` renders ``systemd/scribed.service`` (the ExecStart= line gets the absolute path of the
scribed executable and ``--config PATH``; the ReadWritePaths= lines get every folder the config
says scribed writes to; with ``cluster.broker`` set -- a cluster coordinator, which must reach
its broker -- ``PrivateNetwork=no`` and IPv4/IPv6 sockets in ``RestrictAddressFamilies=``, the
in-process guard still allowing the broker's address alone), writes it to
``$XDG_CONFIG_HOME/systemd/user/scribed.service``, reloads the user manager and enables + starts
the service. ``uninstall`` stops, disables and removes it.
``status`` shows ``systemctl --user status`` and the last 20 journal lines. ``unit`` prints the
unit ``install`` would write, for installing by hand (no user manager needed). Without a
reachable systemd user manager the others print why and return 2. Every error line starts with
``scribed:``. Nothing here imports torch.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from scribed.config import Config, FolderSettings, load_config, xdg_dir
from scribed.errors import ScribedError
from scribed.system import files

UNIT_NAME = "scribed.service"
ACTIONS = ("install", "uninstall", "status", "unit")
_REPO_TEMPLATE = Path(__file__).resolve().parents[2] / "systemd" / UNIT_NAME
# PrivateTmp=yes gives the service its own empty /tmp and /var/tmp.
_PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))


def unit_template() -> str:
    """The unit file shipped with scribed: package data if installed, else the source tree's."""
    try:
        return resources.files("scribed").joinpath("data", UNIT_NAME).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        pass
    try:
        return _REPO_TEMPLATE.read_text(encoding="utf-8")
    except OSError:
        raise ScribedError(f"the unit template {UNIT_NAME} is missing from this installation") from None


def _quote(text: str) -> str:
    if text and not any(c in text for c in " \t\n\"'\\;"):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def quote_arg(arg: str) -> str:
    """One ExecStart= word: specifiers (%) and variables ($) kept literal, quoted if needed."""
    return _quote(str(arg).replace("%", "%%").replace("$", "$$"))


def quote_path(path: str) -> str:
    """One ReadWritePaths= entry: only specifiers (%) expand there, so only "%" is escaped."""
    return _quote(str(path).replace("%", "%%"))


# A cluster coordinator talks to its broker over TCP: the sandbox's network directives, opened
# just that far (IPAddressAllow= would narrow it to the broker, but user managers ignore IP
# filtering; scribed's in-process guard allows the broker's address and port alone).
_BROKER_NETWORK = {
    "PrivateNetwork": ["# cluster.broker is set: this coordinator must reach the broker (the in-process",
                       "# guard allows its address and port alone).", "PrivateNetwork=no"],
    "RestrictAddressFamilies": ["RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6"],
}


def render_unit(template: str, exec_start: Sequence[str], write_paths: Iterable[Path], *,
                broker: bool = False) -> str:
    """``template`` with its ExecStart= line and ReadWritePaths= lines replaced.

    Each write path becomes ``ReadWritePaths=-PATH`` ("-": a missing folder does not stop the
    service from starting). ``broker``: the network directives of a cluster coordinator
    (:data:`_BROKER_NETWORK`). Raises ScribedError if the template lacks a directive it replaces.
    """
    exec_line = "ExecStart=" + " ".join(quote_arg(a) for a in exec_start)
    rw_lines = [f"ReadWritePaths={quote_path('-' + str(p))}" for p in write_paths]
    out: list[str] = []
    seen_exec = seen_rw = False
    network = dict(_BROKER_NETWORK) if broker else {}
    for line in template.splitlines():
        key = line.partition("=")[0]
        if line.startswith("ExecStart="):
            out.append(exec_line)
            seen_exec = True
        elif line.startswith("ReadWritePaths="):
            if not seen_rw:
                out.extend(rw_lines)
            seen_rw = True
        elif key in network:
            out.extend(network.pop(key))
        else:
            out.append(line)
    if not (seen_exec and seen_rw) or network:
        missing = ", ".join(["ExecStart="] * (not seen_exec) + ["ReadWritePaths="] * (not seen_rw)
                            + [f"{key}=" for key in network])
        raise ScribedError(f"the unit template {UNIT_NAME} has no {missing} line")
    return "\n".join(out) + "\n"


def writable_paths(cfg: Config) -> list[Path]:
    """Every folder the daemon writes to (per-folder output and archive folders included),
    absolute and de-duplicated, in a stable order."""
    folders = [FolderSettings.of(cfg, folder) for folder in cfg.watch.folders]
    candidates = [
        *cfg.watch.folders,
        cfg.output.dir,
        *(f.dir for f in folders),
        cfg.policy.archive_dir,
        *(f.archive_dir for f in folders),
        cfg.policy.temp_dir,
        cfg.service.resolved_state_dir,
    ]
    paths = [Path(os.path.abspath(p.expanduser())) for p in candidates if p is not None]
    return list(dict.fromkeys(paths))


def scribed_executable() -> list[str]:
    """The command that starts scribed: ``scribed`` on PATH, else this process's own script."""
    found = shutil.which("scribed")
    if found:
        return [str(Path(found).resolve())]
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.is_file() and os.access(argv0, os.X_OK):
        return [str(argv0.resolve())]
    raise ScribedError("cannot find the scribed executable: install scribed so that `scribed` is on PATH")


def default_user_dir() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "systemd" / "user"


def _run(cmd: Sequence[str], *, check: bool = True, quiet: bool = False) -> int:
    """Run ``cmd``, output to the terminal (or discarded if quiet); returns its exit status."""
    out = subprocess.DEVNULL if quiet else None
    try:
        # Longer than the unit's TimeoutStartSec=: `enable --now` waits for READY=1.
        rc = subprocess.run(list(cmd), stdout=out, stderr=out, check=False, timeout=330).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        _say(f"{' '.join(cmd)}: {exc}")
        return 1
    if check and rc != 0:
        _say(f"`{' '.join(cmd)}` failed with exit status {rc}")
    return rc


def user_manager_problem(systemctl: str) -> str | None:
    """Why ``systemctl --user`` cannot be used here, or None if it can."""
    if shutil.which(systemctl) is None:
        return f"systemd is not available here (no `{systemctl}` on PATH)"
    runtime = files.runtime_dir()
    if _run([systemctl, "--user", "show", "--property=Version"], check=False, quiet=True) != 0:
        where = f"{runtime}/systemd/private is not answering" if runtime else "no $XDG_RUNTIME_DIR"
        return (
            f"cannot talk to a systemd user manager ({where}): "
            "log in through a systemd session, or run `scribed run` under your own supervisor"
        )
    return None


def linger_enabled(user: str, loginctl: str = "loginctl") -> bool | None:
    """Whether ``user``'s services keep running after logout: logind's answer, else its marker
    file (/var/lib/systemd/linger/USER); None when neither can tell."""
    if shutil.which(loginctl):
        try:
            proc = subprocess.run([loginctl, "show-user", user, "--property=Linger"], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and proc.stdout.strip().startswith("Linger="):
            return proc.stdout.strip() == "Linger=yes"
    marker_dir = Path("/var/lib/systemd/linger")
    return (marker_dir / user).exists() if marker_dir.is_dir() else None


def _linger_hint() -> str:
    user = getpass.getuser()
    if linger_enabled(user):
        return "scribed keeps running after you log out (lingering is enabled)."
    return f"To keep scribed running after you log out, run: loginctl enable-linger {user}"


def rendered_unit(config_path: Path | None) -> tuple[str, list[Path]]:
    """The unit for this config (and the folders it lets the service write), as ``install``
    writes it. Warns on stderr about each path the sandbox's private /tmp would hide."""
    cfg = load_config(config_path)
    command = [*scribed_executable(), "run"]
    if config_path is not None:
        command += ["--config", str(Path(os.path.abspath(config_path.expanduser())))]
    paths = writable_paths(cfg)
    text = render_unit(unit_template(), command, paths, broker=cfg.cluster.broker is not None)
    needed = [*paths, Path(command[0]), *([Path(command[-1])] if config_path else []), cfg.model.cache_dir]
    for path in dict.fromkeys(Path(os.path.abspath(p)) for p in needed if p is not None):
        if any(path.is_relative_to(tmp) for tmp in _PRIVATE_TMP):
            _say(f"warning: the service cannot see {path}: PrivateTmp=yes hides /tmp and /var/tmp")
    return text, paths


def _say(message: str) -> None:
    print(f"scribed: {message}", file=sys.stderr)


def _install(config_path: Path | None, unit_file: Path, systemctl: str, dry_run: bool) -> int:
    text, paths = rendered_unit(config_path)
    if dry_run:
        print(f"# would write {unit_file}:\n{text}", end="")
        print(f"# would run: {systemctl} --user daemon-reload; {systemctl} --user enable --now {UNIT_NAME}")
        return 0
    for path in paths:
        if not path.exists():
            # ProtectSystem=strict: the service cannot create a folder in a read-only parent.
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            print(f"created {path}")
    was_active = _run([systemctl, "--user", "is-active", "--quiet", UNIT_NAME], check=False, quiet=True) == 0
    # Atomic: the manager never reads a half-written unit. Replacing our earlier unit is the point.
    files.write_file(unit_file, text.encode("utf-8"), 0o644, overwrite=True)
    print(f"wrote {unit_file}")
    steps = [["daemon-reload"], ["enable", "--now", UNIT_NAME]]
    if was_active:
        steps.append(["restart", UNIT_NAME])  # enable --now does not restart a running service
    for step in steps:
        if _run([systemctl, "--user", *step]) != 0:
            return 1
    print(f"scribed is installed and running; see `scribed service status`.\n{_linger_hint()}")
    return 0


def _uninstall(unit_file: Path, systemctl: str, dry_run: bool) -> int:
    if dry_run:
        print(f"# would run: {systemctl} --user disable --now {UNIT_NAME}; remove {unit_file}; daemon-reload")
        return 0
    _run([systemctl, "--user", "disable", "--now", UNIT_NAME], check=False)
    if unit_file.exists():
        unit_file.unlink()
        print(f"removed {unit_file}")
    else:
        print(f"{unit_file} was not installed")
    return 0 if _run([systemctl, "--user", "daemon-reload"]) == 0 else 1


def _status(systemctl: str, dry_run: bool) -> int:
    if dry_run:
        print(f"# would run: {systemctl} --user status {UNIT_NAME}; journalctl --user -u {UNIT_NAME} -n 20")
        return 0
    rc = _run([systemctl, "--user", "status", "--no-pager", UNIT_NAME], check=False)
    journalctl = shutil.which("journalctl")
    if journalctl:
        _run([journalctl, "--user", "-u", UNIT_NAME, "-n", "20", "--no-pager"], check=False)
    return rc  # systemctl's LSB code: 0 running, 3 stopped, 4 not installed


def service_command(
    action: str,
    config_path: Path | None,
    *,
    user_dir: Path | None = None,
    systemctl: str = "systemctl",
    dry_run: bool = False,
) -> int:
    """Run ``scribed service ACTION``; returns the exit status (2: no systemd or bad config).

    ``user_dir`` overrides the unit folder (default ``$XDG_CONFIG_HOME/systemd/user``);
    ``dry_run`` prints the rendered unit and the commands instead of running anything.
    """
    if action not in ACTIONS:
        _say(f"unknown service action {action!r} (expected {', '.join(ACTIONS)})")
        return 2
    unit_file = (user_dir or default_user_dir()) / UNIT_NAME
    try:
        if action == "unit":  # needs no user manager: for installing by hand or another supervisor
            print(rendered_unit(Path(config_path) if config_path else None)[0], end="")
            return 0
        if not dry_run:
            problem = user_manager_problem(systemctl)
            if problem:
                _say(problem)
                return 2
        if action == "install":
            return _install(Path(config_path) if config_path else None, unit_file, systemctl, dry_run)
        if action == "uninstall":
            return _uninstall(unit_file, systemctl, dry_run)
        return _status(systemctl, dry_run)
    except ScribedError as exc:
        _say(str(exc))
        return exc.exit_code
    except OSError as exc:
        _say(str(exc))
        return 1
