"""Tests for scribed.system.netguard: the in-process network guard and the routing self-test.

The guard is process-wide and irreversible, so it is only installed in a child interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import pytest
from pychild import run_python

from scribed.system import netguard


def test_system_modules_do_not_import_torch() -> None:
    proc = run_python(
        """
        import sys
        import scribed.system.files, scribed.system.harden, scribed.system.netguard, scribed.system.retention
        import scribed.system.sdnotify, scribed.system.tempdir, scribed.system.unit, scribed.output
        print(*(m in sys.modules for m in ("torch", "transformers", "numpy")))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False"]


def test_caller_outside_names_the_first_frame_outside_the_skipped_files() -> None:
    def inner() -> tuple[str, str, int]:
        return netguard.caller_outside(__file__)

    assert inner()[0] != "tests/unit/system/test_netguard.py"
    where = (lambda: netguard.caller_outside())()
    assert where[0].endswith("system/test_netguard.py") and where[1] == "<lambda>"



GUARD_SCRIPT = """
import json, os, socket, sys, urllib.request
from scribed.system import files, fstype, harden, netguard, retention, tempdir
from scribed.errors import NetworkBlockedError

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen()
listener.setblocking(False)
port = listener.getsockname()[1]
early = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # created before the guard

seen = []
netguard.install_network_guard(seen.append)
netguard.install_network_guard(seen.append)  # idempotent: still one hook, one callback

def attempt(fn):
    try:
        fn()
    except Exception as exc:
        reason = getattr(exc, "reason", None)  # urllib wraps OSErrors in URLError
        return {"type": type(exc).__name__, "blocked": isinstance(exc, NetworkBlockedError)
                or isinstance(reason, NetworkBlockedError), "oserror": isinstance(exc, OSError)}
    return {"type": None, "blocked": False, "oserror": False}

out = {
    "connect_early": attempt(lambda: early.connect(("127.0.0.1", port))),
    "new_inet": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
    "new_inet6": attempt(lambda: socket.socket(socket.AF_INET6)),
    "create_connection": attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=1)),
    "urlopen": attempt(lambda: urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)),
    "getaddrinfo": attempt(lambda: socket.getaddrinfo("localhost", 80)),
}
try:
    listener.accept()
    out["listener_got_connection"] = True
except BlockingIOError:
    out["listener_got_connection"] = False
a, b = socket.socketpair()
a.sendall(b"still works")
out["socketpair"] = b.recv(64).decode()
with urllib.request.urlopen("file://" + os.path.abspath(netguard.__file__)) as local:  # not network
    out["file_url"] = local.read(9) == open(netguard.__file__, "rb").read(9)
out["callbacks"] = seen
out["env"] = {k: os.environ.get(k) for k in netguard.OFFLINE_ENV}
out["report"] = netguard.network_self_test().detail
print(json.dumps(out))
"""


def test_network_guard_blocks_everything_but_unix_sockets() -> None:
    proc = run_python(GUARD_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for name in ("connect_early", "new_inet", "new_inet6", "create_connection", "urlopen", "getaddrinfo"):
        assert out[name]["blocked"], (name, out[name])
    # Libraries see an OSError, i.e. an ordinary network failure.
    assert out["connect_early"]["oserror"] and out["getaddrinfo"]["oserror"]
    assert out["listener_got_connection"] is False
    assert out["socketpair"] == "still works"
    assert out["file_url"] is True
    # One callback per attempt even though install was called twice.
    assert len(out["callbacks"]) == 6, out["callbacks"]
    assert any("127.0.0.1" in detail and "connect" in detail for detail in out["callbacks"])
    assert any("urllib request to http://127.0.0.1" in detail for detail in out["callbacks"])
    assert proc.stderr.count("network blocked: ") == 6, proc.stderr
    assert out["env"] == netguard.OFFLINE_ENV
    assert out["report"].startswith("network: blocked in-process; ")


def test_network_guard_sees_sockets_built_from_a_file_descriptor() -> None:
    proc = run_python(
        """
        import socket
        from scribed.system import files, fstype, harden, netguard, retention, tempdir
        from scribed.errors import NetworkBlockedError
        fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
        netguard.install_network_guard()
        sock = socket.socket(fileno=fd)  # family unknown at creation, so checked on use
        try:
            sock.sendto(b"x", ("127.0.0.1", 9))
        except NetworkBlockedError:
            print("blocked")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "blocked"


def test_network_guard_keeps_urllib3_ipv6_probe_quiet() -> None:
    if importlib.util.find_spec("urllib3") is None:  # not imported here: its probe would bind
        pytest.skip("urllib3 not installed")
    proc = run_python(
        """
        from scribed.system import files, fstype, harden, netguard, retention, tempdir
        seen = []
        netguard.install_network_guard(seen.append)
        import urllib3
        print(len(seen))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert "network blocked: " not in proc.stderr


def test_network_self_test_without_guard() -> None:
    # In a fresh process: other tests in this session install the (irreversible) guard.
    proc = run_python("from scribed.system import netguard; r = netguard.network_self_test();"
                      "print(r.guard_active, r.reachable, r.detail, sep='|')")
    guard, reachable, detail = proc.stdout.strip().split("|")
    assert guard == "False"
    assert detail.startswith("network: NOT blocked in-process; ")
    assert reachable == str("no route off this machine" not in detail)


def test_network_self_test_in_an_empty_network_namespace() -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    proc = run_python("from scribed.system import netguard; r = netguard.network_self_test();"
                      "print(r.reachable, r.detail)", prefix=[unshare, "-rn"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False network: NOT blocked in-process; no route off this machine"


ENDPOINT_SCRIPT = """
import json, socket
from scribed.system import netguard
from scribed.errors import NetworkBlockedError

broker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the "broker", listening before the guard
broker.bind(("127.0.0.1", 0))
broker.listen()
other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # another service on this host
other.bind(("127.0.0.1", 0))
other.listen()
port, other_port = broker.getsockname()[1], other.getsockname()[1]

def attempt(fn):
    try:
        fn()
        return "ok"
    except NetworkBlockedError:
        return "blocked"
    except Exception as exc:
        return type(exc).__name__

seen = []
netguard.install_network_guard(seen.append)
endpoint = netguard.allow_endpoint("localhost", port)
out = {"addresses": sorted(endpoint.addresses), "report": netguard.network_self_test().detail}

def talk():
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"PING")
    s.close()

def udp_elsewhere():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", other_port))

def bind_any():
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).bind(("127.0.0.1", 0))

out.update(
    broker=attempt(talk),
    broker_by_name=attempt(lambda: socket.create_connection(("localhost", port), timeout=2).close()),
    other_port=attempt(lambda: socket.create_connection(("127.0.0.1", other_port), timeout=2).close()),
    other_host=attempt(lambda: socket.create_connection(("127.0.0.2", port), timeout=2).close()),
    lookup_broker=attempt(lambda: socket.getaddrinfo("localhost", port)),
    lookup_other=attempt(lambda: socket.getaddrinfo("example.com", 443)),
    udp_elsewhere=attempt(udp_elsewhere),
    bind=attempt(bind_any),
    unix=attempt(lambda: socket.socketpair()),
    again=attempt(lambda: netguard.allow_endpoint("localhost", port)),
    second=attempt(lambda: netguard.allow_endpoint("localhost", other_port)),
)
conn, _ = broker.accept()
out["broker_got"] = conn.recv(4).decode()
out["blocked_logged"] = len(seen)
print(json.dumps(out))
"""


def test_the_allowed_endpoint_is_the_only_way_out() -> None:
    proc = run_python(ENDPOINT_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "127.0.0.1" in out["addresses"]
    assert out["broker"] == "ok" and out["broker_got"] == "PING"
    assert out["broker_by_name"] == "ok" and out["lookup_broker"] == "ok"
    for name in ("other_port", "other_host", "lookup_other", "udp_elsewhere", "bind"):
        assert out[name] == "blocked", (name, out)
    assert out["unix"] == "ok" and out["again"] == "ok"
    assert out["second"] == "ValueError"  # one broker per process
    assert out["blocked_logged"] == 5
    assert out["report"].startswith("network: blocked in-process except the broker localhost:")


def test_allow_endpoint_resolves_under_the_guard_and_reports_unknown_names() -> None:
    proc = run_python(
        """
        import socket
        from scribed.system import netguard
        netguard.install_network_guard()
        try:
            netguard.allow_endpoint("no-such-host.invalid", 6379)
        except socket.gaierror:
            print("gaierror", netguard.allowed_endpoint())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["gaierror", "None"]
