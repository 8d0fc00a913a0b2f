"""scribed.doctor_host: the GPU sandbox, device, systemd and network findings (real child processes)."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from scribed import doctor_host
from scribed.config import parse_config
from scribed.system import netguard
from scribed.system.unit import UNIT_NAME, unit_template


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture
def nodes(tmp_path: Path) -> list[str]:
    found = []
    for name in ("nvidia0", "nvidiactl"):
        node = tmp_path / "dev" / name
        node.parent.mkdir(exist_ok=True)
        node.write_bytes(b"")
        found.append(str(node))
    return found


def _install(units: Path, *drop_ins: str) -> Path:
    units.mkdir(exist_ok=True)
    (units / UNIT_NAME).write_text(unit_template())
    for i, text in enumerate(drop_ins):
        folder = units / f"{UNIT_NAME}.d"
        folder.mkdir(exist_ok=True)
        (folder / f"{i}-override.conf").write_text(f"[Service]\n{text}\n")
    return units / UNIT_NAME


def test_the_shipped_unit_lets_the_gpu_through(tmp_path: Path, nodes: list[str]) -> None:
    assert doctor_host._sandbox(nodes, tmp_path / "no-units").line() == (
        "ok   sandbox: the shipped unit does not hide the GPU (no PrivateDevices=, DevicePolicy=, DeviceAllow=) "
        "and this user can open its 2 device node(s)")


def test_a_drop_in_that_hides_devices_is_found_and_a_reset_is_honoured(tmp_path: Path, nodes: list[str]) -> None:
    unit = _install(tmp_path / "units", "PrivateDevices=yes")
    assert doctor_host._sandbox(nodes, tmp_path / "units").line() == (
        f"warn sandbox: {unit} (with 1 drop-in(s)) sets PrivateDevices=yes: the service cannot see the GPU; "
        "fix: remove it (systemctl --user edit scribed), then restart the service")
    _install(tmp_path / "units", "PrivateDevices=yes", "PrivateDevices=")  # a later empty value resets it
    assert doctor_host._sandbox(nodes, tmp_path / "units").status == "ok"


def test_a_device_node_this_user_cannot_open(tmp_path: Path, nodes: list[str]) -> None:
    closed = str(tmp_path / "dev" / "nvidia-uvm-missing")
    assert doctor_host._sandbox([*nodes, closed], None).line() == (
        f"warn gpu: this user cannot open {closed}, so neither can the service; fix: add the user to the group "
        f"that owns it (ls -l {closed}), then log in again")


def test_a_cuda_device_without_a_gpu_fails_with_the_fix(tmp_path: Path) -> None:
    if _torch_cuda():
        pytest.skip("this machine has a CUDA GPU")
    cfg = parse_config({"model": {"device": "cuda:0"}})
    (finding,) = doctor_host.check_device(cfg, str(tmp_path / "none*"), None)
    assert finding.line() == ("fail device: model.device is 'cuda:0' but no CUDA GPU is available (use 'auto' or "
                              "'cpu'); fix: set model.device: auto (or cpu)")


def test_gpu_nodes_but_a_torch_without_cuda(tmp_path: Path, nodes: list[str]) -> None:
    import torch

    if _torch_cuda() or torch.version.cuda is not None:
        pytest.skip("this torch has CUDA")
    cfg = parse_config({"model": {"device": "cpu", "dtype": "float32"}})
    device, gpu, sandbox = doctor_host.check_device(cfg, str(tmp_path / "dev" / "nvidia*"), tmp_path / "units")
    assert device.status == "ok"
    assert gpu.line() == (f"warn gpu: {nodes[0]} exists but torch {torch.__version__} was built without CUDA; "
                          "fix: install a CUDA build of torch (the default `pip install torch` on Linux)")
    assert sandbox.status == "ok"


def test_systemd_without_the_unit_installed(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\necho Linger=yes\n")
    tool.chmod(0o755)
    found = [f.line() for f in doctor_host.check_systemd(str(tool), str(tool), tmp_path / "units")]
    user = getpass.getuser()
    assert found == ["ok   systemd: a systemd user manager answers",
                     "warn service: the user service is not installed; fix: scribed service install",
                     f"ok   linger: enabled for {user}: the service keeps running after logout"]


def test_network_guard_off_and_a_unit_without_private_network(tmp_path: Path) -> None:
    cfg = parse_config({"policy": {"block_network": False}})
    unit = _install(tmp_path / "units", "PrivateNetwork=no")
    found = [f.line() for f in doctor_host.check_network(cfg, tmp_path / "units")]
    assert found[0] == ("warn network: policy.block_network is off: scribed does not refuse sockets itself; "
                        "fix: set policy.block_network: true")
    assert found[1].startswith("ok   network: the in-process guard refuses sockets (tested in a child process)")
    if netguard.network_self_test().reachable:
        assert found[2:] == [f"warn network: {unit} (with 1 drop-in(s)) lacks PrivateNetwork=yes: only the in-process "
                             "guard keeps the service offline; fix: restore PrivateNetwork=yes "
                             "(systemctl --user edit scribed)"]
    else:
        assert found[2:] == []


def test_a_child_check_that_breaks_is_an_error_not_a_crash() -> None:
    assert doctor_host._child("import sys; print('half', file=sys.stderr); sys.exit(3)") == {
        "error": "the check failed (exit status 3): half"}


def test_speaker_turns_need_the_voice_encoder() -> None:
    from importlib import metadata

    assert doctor_host.check_speakers(parse_config({})) == []  # off: nothing to check
    (finding,) = doctor_host.check_speakers(parse_config({"transcription": {"speakers": "auto"}}))
    try:
        dist = metadata.distribution("resemblyzer")
    except metadata.PackageNotFoundError:
        assert finding.line() == ("fail speakers: speaker turns are on but the voice encoder's weights (package "
                                  "resemblyzer) are not installed; fix: pip install --no-deps resemblyzer==0.1.4")
    else:
        weights = Path(str(dist.locate_file("resemblyzer/pretrained.pt")))
        assert finding.line() == f"ok   speakers: the voice encoder's weights are installed ({weights})"
