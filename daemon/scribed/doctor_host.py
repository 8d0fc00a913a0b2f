"""The checks of ``scribed doctor`` that ask the host: device and GPU sandbox, the speaker model,
systemd, network.

Contract: each ``check_*`` returns :class:`~scribed.doctor.Finding` s and changes nothing. What
needs torch (the device and dtype scribed would pick, by the engine's own
:func:`scribed.engine.qwen3.resolve_device`) or the irreversible network guard runs in a child
Python process, so the doctor's process imports neither. systemd is asked through
``systemctl --user`` and ``loginctl`` (the doctor is a CLI command, not a hardened process).
The service unit read is the installed one (with its drop-ins) if any, else the shipped template.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scribed.config import Config, FolderSettings
from scribed.doctor import FAIL, OK, WARN, Finding
from scribed.system import unit

CHILD_TIMEOUT_S = 180.0
# Directives that would hide the GPU from the service (see the comments in the unit template).
_HIDING = {"PrivateDevices": ("yes", "true", "on", "1"), "DevicePolicy": ("closed", "strict"), "DeviceAllow": None,
           "ProcSubset": ("pid",)}  # fmt: skip

_DEVICE_PROBE = """
import json, sys
try:
    import torch
    from scribed.engine.qwen3 import resolve_device
    from scribed.errors import ModelError
except ImportError as exc:
    print(json.dumps({"error": f"cannot import {exc.name}: {exc}"}))
    raise SystemExit(0)
info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda": torch.cuda.is_available()}
try:
    dev, dtype = resolve_device(sys.argv[1], sys.argv[2])
except ModelError as exc:
    info["error"] = str(exc)
else:
    info.update(device=str(dev), dtype=str(dtype).removeprefix("torch."),
                name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
print(json.dumps(info))
"""

_SPEAKER_PROBE = """
import json
from scribed.engine import voice
from scribed.errors import ModelError
try:
    print(json.dumps({"path": str(voice.weights_path())}))
except ModelError:
    print(json.dumps({"missing": voice.DISTRIBUTION, "install": voice.INSTALL_HINT}))
"""

_NETWORK_PROBE = """
import json, socket
from loguru import logger
logger.remove()  # the guard logs each refusal; only the verdict is wanted here
from scribed.errors import NetworkBlockedError
from scribed.system import netguard
netguard.install_network_guard()
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    refused = False
except NetworkBlockedError:
    refused = True
report = netguard.network_self_test()
print(json.dumps({"refused": refused, "reachable": report.reachable, "detail": report.detail}))
"""


def _child(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter that imports this scribed; its one JSON line, or an error."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              timeout=CHILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"the check could not run: {exc}"}
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the check failed (exit status {proc.returncode}): {last}"}


def _unit_text(unit_dir: Path | None) -> tuple[str, str]:
    """(where, text): the installed unit plus its drop-ins, else the shipped template."""
    folder = unit_dir or unit.default_user_dir()
    installed = folder / unit.UNIT_NAME
    if installed.is_file():
        drop_ins = sorted((folder / f"{unit.UNIT_NAME}.d").glob("*.conf"))
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in (installed, *drop_ins)]
        return str(installed) + (f" (with {len(drop_ins)} drop-in(s))" if drop_ins else ""), "\n".join(texts)
    return "the shipped unit", unit.unit_template()


def _directives(text: str) -> dict[str, str]:
    """The last value of each directive (a later line, or a drop-in, wins); an empty one resets."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith(("#", ";", "[")):
            found[key.strip()] = value.strip()
    return {k: v for k, v in found.items() if v}


# -- device -------------------------------------------------------------------------------------------


def check_device(cfg: Config, gpu_nodes: str, unit_dir: Path | None) -> list[Finding]:
    info = _child(_DEVICE_PROBE, cfg.model.device, cfg.model.dtype)
    nodes = sorted(p for p in glob.glob(gpu_nodes) if not os.path.isdir(p))
    found = []
    if "device" not in info:
        fix = "set model.device: auto (or cpu)" if "torch" in info else "reinstall scribed with its dependencies"
        found.append(Finding(FAIL, "device", str(info.get("error", "unknown problem")).splitlines()[0], fix))
    elif info["device"].startswith("cuda"):
        found.append(Finding(OK, "device", f"{info['device']} ({info['name']}), dtype {info['dtype']} "
                             f"(torch {info['torch']}, CUDA {info['cuda_build']})"))
    else:
        found.append(Finding(OK, "device", f"cpu, dtype {info['dtype']} (model.device: {cfg.model.device}; "
                             f"torch {info['torch']} sees {'a GPU' if info['cuda'] else 'no GPU'})"))
    if nodes and "torch" in info and not info.get("cuda"):
        why = "was built without CUDA" if info.get("cuda_build") is None else "cannot use it"
        fix = ("install a CUDA build of torch (the default `pip install torch` on Linux)" if info.get("cuda_build")
               is None else "check the NVIDIA driver with nvidia-smi")
        found.append(Finding(WARN, "gpu", f"{nodes[0]} exists but torch {info['torch']} {why}", fix))
    if nodes:
        found.append(_sandbox(nodes, unit_dir))
    return found


def _sandbox(nodes: list[str], unit_dir: Path | None) -> Finding:
    closed = [n for n in nodes if not os.access(n, os.R_OK | os.W_OK)]
    if closed:
        return Finding(WARN, "gpu", f"this user cannot open {closed[0]}, so neither can the service",
                       f"add the user to the group that owns it (ls -l {closed[0]}), then log in again")
    where, text = _unit_text(unit_dir)
    directives = _directives(text)
    for key, hiding in _HIDING.items():
        value = directives.get(key)
        if value is not None and (hiding is None or value.lower() in hiding):
            return Finding(WARN, "sandbox", f"{where} sets {key}={value}: the service cannot see the GPU",
                           "remove it (systemctl --user edit scribed), then restart the service")
    return Finding(OK, "sandbox", f"{where} does not hide the GPU (no PrivateDevices=, DevicePolicy=, DeviceAllow=) "
                   f"and this user can open its {len(nodes)} device node(s)")


def check_speakers(cfg: Config) -> list[Finding]:
    """The voice encoder's weights, when speaker turns are on (globally or for any folder)."""
    wanted = cfg.transcription.speakers != "off" or any(
        FolderSettings.of(cfg, folder).speakers != "off" for folder in cfg.watch.folders)
    if not wanted:
        return []
    info = _child(_SPEAKER_PROBE)
    if "path" in info:
        return [Finding(OK, "speakers", f"the voice encoder's weights are installed ({info['path']})")]
    if "missing" in info:
        return [Finding(FAIL, "speakers", f"speaker turns are on but the voice encoder's weights (package "
                        f"{info['missing']}) are not installed", str(info["install"]))]
    return [Finding(FAIL, "speakers", f"the check did not run: {info.get('error')}",
                    "reinstall scribed with its dependencies")]


# -- systemd ------------------------------------------------------------------------------------------


def check_systemd(systemctl: str, loginctl: str, unit_dir: Path | None) -> list[Finding]:
    user = getpass.getuser()
    problem = unit.user_manager_problem(systemctl)
    if problem:
        found = [Finding(WARN, "systemd", problem,
                         "`scribed service unit` prints the unit, to install by hand or adapt")]
    else:
        installed = (unit_dir or unit.default_user_dir()) / unit.UNIT_NAME
        found = [Finding(OK, "systemd", "a systemd user manager answers"),
                 Finding(OK, "service", f"installed at {installed}") if installed.is_file()
                 else Finding(WARN, "service", "the user service is not installed", "scribed service install")]
    linger = unit.linger_enabled(user, loginctl)
    if linger:
        found.append(Finding(OK, "linger", f"enabled for {user}: the service keeps running after logout"))
    else:
        said = "off" if linger is False else "unknown (logind did not answer)"
        found.append(Finding(WARN, "linger", f"{said} for {user}: the service stops when {user} logs out",
                             f"loginctl enable-linger {user}"))
    return found


# -- network ------------------------------------------------------------------------------------------


def check_network(cfg: Config, unit_dir: Path | None) -> list[Finding]:
    found = []
    if not cfg.policy.block_network:
        found.append(Finding(WARN, "network", "policy.block_network is off: scribed does not refuse sockets itself",
                             "set policy.block_network: true"))
    info = _child(_NETWORK_PROBE)
    if "refused" not in info:
        return [*found, Finding(FAIL, "network", f"the guard self-test did not run: {info.get('error')}",
                                "reinstall scribed with its dependencies")]
    if not info["refused"]:
        return [*found, Finding(FAIL, "network", "the in-process guard let a test socket through",
                                "this is a bug: report it with `scribed --version`")]
    routes = str(info["detail"]).partition("; ")[2]  # after "network: blocked in-process"
    found.append(Finding(OK, "network", f"the in-process guard refuses sockets (tested in a child process); {routes}"))
    if info["reachable"]:
        where, text = _unit_text(unit_dir)
        if _directives(text).get("PrivateNetwork", "").lower() in ("yes", "true", "on", "1"):
            found.append(Finding(OK, "network", f"{where} gives the service no route off this machine "
                                 "(PrivateNetwork=yes)"))
        else:
            found.append(Finding(WARN, "network", f"{where} lacks PrivateNetwork=yes: only the in-process guard "
                                 "keeps the service offline",
                                 "restore PrivateNetwork=yes (systemctl --user edit scribed)"))
    return found
