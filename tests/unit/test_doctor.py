"""``scribed doctor`` on a healthy setup and on a broken one: the exact ok/warn/fail lines.

Real folders, the real trained tiny model folder, real child processes for the device and the
network guard; only the system's answers that a test machine cannot be made to give (systemctl,
loginctl, the inotify limit, GPU device nodes, the unit folder) come from fakes in the temp folder.
"""

from __future__ import annotations

import getpass
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scribed import doctor
from scribed.doctor import Probes, count_folders, doctor_command
from scribed.system import netguard
from scribed.system.fstype import filesystem_type, is_network_filesystem
from scribed.system.unit import UNIT_NAME, unit_template

USER = getpass.getuser()


def _tool(path: Path, script: str) -> str:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def place(tmp_path: Path) -> Path:
    if is_network_filesystem(tmp_path):
        pytest.skip("the temp folder is on a network file system")
    (tmp_path / "bin").mkdir()
    (tmp_path / "inbox" / "team" / "2024").mkdir(parents=True)
    return tmp_path


def _probes(place: Path, *, manager: bool = True, linger: str = "yes", watches: int = 65536,
            fail_below: float = 0) -> Probes:
    (place / "max_user_watches").write_text(f"{watches}\n")
    systemctl = _tool(place / "bin" / "systemctl", "exit 0" if manager else "echo 'No medium found' >&2; exit 1")
    loginctl = _tool(place / "bin" / "loginctl", f"echo Linger={linger}")
    return Probes(systemctl=systemctl, loginctl=loginctl, max_user_watches=place / "max_user_watches",
                  gpu_nodes=str(place / "no-gpu" / "nvidia*"), unit_dir=place / "units",
                  fail_below_bytes=fail_below, warn_below_bytes=fail_below)


def _config(place: Path, **sections: dict) -> Path:
    data: dict = {"watch": {"folders": [str(place / "inbox")]},
                  "service": {"state_dir": str(place / "state")}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = place / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(config: Path, probes: Probes) -> tuple[int, list[str]]:
    out = io.StringIO()
    rc = doctor_command(config, probes=probes, out=out)
    return rc, out.getvalue().splitlines()


def _space_lines(lines: list[str], status: str) -> list[str]:
    """The free-space lines (their number of GB changes between two looks), checked by pattern."""
    found = [line for line in lines if line.startswith(f"{status:<4} space: ")]
    assert all(re.fullmatch(rf"{status:<4} space: \d+\.\d GB free on the file system of .+", line.split("; fix")[0])
               for line in found), found
    return [line for line in lines if line not in found]


def _device_line(model_device: str = "cpu") -> str:
    import torch

    sees = "a GPU" if torch.cuda.is_available() else "no GPU"
    return f"ok   device: cpu, dtype float32 (model.device: {model_device}; torch {torch.__version__} sees {sees})"


def _network_lines(unit: str) -> list[str]:
    report = netguard.network_self_test()  # reads the routing table only
    lines = [f"ok   network: the in-process guard refuses sockets (tested in a child process); "
             f"{report.detail.partition('; ')[2]}"]
    if report.reachable:
        lines.append(f"ok   network: {unit} gives the service no route off this machine (PrivateNetwork=yes)")
    return lines


def test_a_healthy_setup(place: Path, tiny_model: Path) -> None:
    config = _config(place, model={"id": str(tiny_model), "device": "cpu", "dtype": "float32"})
    probes = _probes(place)
    (place / "units").mkdir()
    installed = place / "units" / UNIT_NAME
    installed.write_text(unit_template())
    rc, lines = _run(config, probes)
    inbox = place / "inbox"
    assert _space_lines(lines, "ok") == [
        f"ok   config: {config} is valid",
        f"ok   folder {inbox}: exists; readable and writable",
        f"ok   watch {inbox}: inotify ({filesystem_type(inbox)} is a local file system)",
        f"ok   state {place / 'state'}: will be created in {place}",
        "ok   inotify: 3 folder(s) to watch; fs.inotify.max_user_watches is 65536",
        f"ok   model: model folder {tiny_model.resolve()} is present",
        _device_line(),
        "ok   systemd: a systemd user manager answers",
        f"ok   service: installed at {installed}",
        f"ok   linger: enabled for {USER}: the service keeps running after logout",
        *_network_lines(str(installed)),
        lines[-1],
    ]
    assert lines[-1] == f"{len(lines) - 1} ok, 0 warning(s), 0 failure(s)"
    assert rc == 0
    assert not (place / "state").exists()  # doctor creates nothing


@pytest.fixture
def unwritable(place: Path) -> Iterator[Path]:
    folder = place / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("root ignores modes, and the immutable attribute is not available here")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_broken_setup(place: Path, unwritable: Path) -> None:
    missing = place / "gone"
    no_model = place / "no-model"
    config = _config(place, watch={"folders": [str(missing), str(unwritable), str(place / "inbox")]},
                     model={"id": str(no_model), "device": "cpu", "dtype": "float32",
                            "cache_dir": str(place / "hf")},
                     transcription={"word_timestamps": True})
    rc, lines = _run(config, _probes(place, manager=False, linger="no", watches=4, fail_below=1e18))
    inbox = place / "inbox"
    assert rc == 1
    assert _space_lines(lines, "fail") == [
        f"ok   config: {config} is valid",
        f"fail folder {missing}: does not exist; fix: mkdir -p {missing}",
        f"fail folder {unwritable}: this user cannot write there (transcripts and failure notes go beside the "
        f"recordings); fix: chmod u+w {unwritable}, or set output.dir",
        f"ok   folder {inbox}: exists; readable and writable",
        f"ok   watch {inbox}: inotify ({filesystem_type(inbox)} is a local file system)",
        f"ok   state {place / 'state'}: will be created in {place}",
        "warn inotify: 4 folder(s) to watch but fs.inotify.max_user_watches is 4: scribed falls back to slower "
        "polling; fix: sudo sysctl fs.inotify.max_user_watches=65536, and the same line in "
        "/etc/sysctl.d/90-scribed.conf to keep it",
        f"fail model: model folder {str(no_model)!r} does not exist; fix: set model.id to a model folder or a "
        "Hugging Face id",
        f"fail aligner: model 'Qwen/Qwen3-ForcedAligner-0.6B-hf' is not in the local cache ({place / 'hf'}); "
        "fix: scribed model pull Qwen/Qwen3-ForcedAligner-0.6B-hf",
        _device_line(),
        "warn systemd: cannot talk to a systemd user manager "
        f"({_runtime_said()}): log in through a systemd session, or run `scribed run` under your own supervisor; "
        "fix: `scribed service unit` prints the unit, to install by hand or adapt",
        f"warn linger: off for {USER}: the service stops when {USER} logs out; fix: loginctl enable-linger {USER}",
        *_network_lines("the shipped unit"),
        lines[-1],
    ]
    fails = sum(line.startswith("fail") for line in lines)
    assert fails == 5 and lines[-1].endswith(", 3 warning(s), 5 failure(s)")


def _runtime_said() -> str:
    from scribed.system.files import runtime_dir

    runtime = runtime_dir()
    return f"{runtime}/systemd/private is not answering" if runtime else "no $XDG_RUNTIME_DIR"


def test_a_config_that_does_not_load_ends_the_run(place: Path) -> None:
    config = place / "config.yaml"
    config.write_text("watch:\n  folderz: [/x]\nmodel:\n  batch_size: 0\n")
    rc, lines = _run(config, _probes(place))
    assert rc == 1
    fix = f"; fix: edit {config} (all problems: scribed check-config {config})"
    assert lines == [
        "fail config: At 'watch.folderz': unknown key (did you mean 'folders'?)" + fix,
        "fail config: At 'model.batch_size': expected an integer >= 1, got 0" + fix,
        "0 ok, 0 warning(s), 2 failure(s)",
    ]


def test_no_config_file_is_a_warning_with_the_init_command(place: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(place / "xdg"))
    cfg, (finding,) = doctor.check_config(None)
    assert cfg is not None and finding.line() == (
        f"warn config: no config file at {place / 'xdg' / 'scribed' / 'config.yaml'}; the defaults apply; "
        "fix: scribed config init")


def test_watch_modes_say_why(place: Path) -> None:
    from scribed.config import parse_config

    inbox = place / "inbox"
    always = parse_config({"watch": {"folders": [str(inbox)], "polling": "always", "poll_interval_s": 3}})
    assert doctor._watch_mode(always, inbox).line() == (
        f"ok   watch {inbox}: polling every 3 s (watch.polling: always; {filesystem_type(inbox)} file system)")


def test_the_inotify_walk_is_bounded_and_follows_no_link(place: Path) -> None:
    root = place / "inbox"
    (root / "team" / "link").symlink_to(place, target_is_directory=True)  # a loop if followed
    assert count_folders(root, max_depth=32) == (3, False)
    assert count_folders(root, max_depth=1) == (2, False)
    assert count_folders(root, max_depth=32, cap=2) == (2, True)


def test_the_doctor_command_through_the_cli(place: Path, capsys) -> None:
    from scribed import cli

    config = place / "config.yaml"
    config.write_text("watch:\n  folderz: [/x]\n")
    assert cli.main(["doctor", "-c", str(config)]) == 1
    assert capsys.readouterr().out.startswith("fail config: At 'watch.folderz'")


def test_doctor_loads_no_heavy_library(place: Path) -> None:
    config = _config(place, model={"id": str(place / "no-model")})
    code = ("import sys; from scribed import doctor; from scribed.cli import main; "
            "from scribed.doctor import findings, Probes; "
            "list(doctor.check_config(sys.argv[1])[1]); cfg = doctor.check_config(sys.argv[1])[0]; "
            "doctor.check_models(cfg); doctor.check_folder(cfg, cfg.watch.folders[0]); "
            "heavy = [m for m in ('torch', 'transformers', 'numpy', 'watchdog') if m in sys.modules]; "
            "sys.exit(str(heavy) if heavy else 0)")
    env = dict(os.environ, PYTHONPATH=str(Path(doctor.__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
