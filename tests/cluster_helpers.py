"""For the cluster tests: a real ``redis-server`` on loopback in a temporary folder.

:class:`RedisServer` runs the Debian ``redis-server`` binary on 127.0.0.1 and a free port, with
its data in a temporary folder, append-only persistence (``appendfsync always``: a ``kill -9``
loses nothing acknowledged), and an ACL: the default user is off, user ``scribed`` has a
password and every command but the ``@dangerous`` ones (the README's recommended ACL line). It
can be killed and started again on the same port and folder. Optional TLS (``tls=True``)
uses a throw-away CA and server certificate made with the ``openssl`` command.

The test process reaches it only through loopback, so a test using it requests the conftest's
``allow_loopback`` fixture. Waits are bounded polls of a real condition.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "unit" / "system"))
from pychild import run_python

__all__ = ["ACL", "RedisServer", "cluster_section", "free_port", "make_certs", "need_redis", "run_python"]

REDIS = shutil.which("redis-server")
ACL = "~* &* +@all -@dangerous"  # what the README recommends for the scribed user


def need_redis() -> str:
    if REDIS is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    return REDIS


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for ``localhost``/127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make a test certificate)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=scribed-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


class RedisServer:
    """A redis-server process of this test (see the module docstring)."""

    def __init__(self, folder: Path, *, tls: bool = False, user: str = "scribed") -> None:
        self.binary = need_redis()
        self.folder = folder
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = user
        self.password = "pw-" + secrets.token_hex(12)
        self.password_file = folder / "broker-password"
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        self.tls = tls
        self.ca = None
        lines = [f"dir {self.data}", "appendonly yes", "appendfsync always", 'save ""', "bind 127.0.0.1",
                 "protected-mode yes", f"logfile {folder / 'redis.log'}", "user default off",
                 f"user {user} on >{self.password} {ACL}"]
        if tls:
            self.ca, cert, key = make_certs(folder / "tls")
            lines += ["port 0", f"tls-port {self.port}", f"tls-cert-file {cert}", f"tls-key-file {key}",
                      f"tls-ca-cert-file {self.ca}", "tls-auth-clients no"]
        else:
            lines.append(f"port {self.port}")
        self.conf = folder / "redis.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.user}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen([self.binary, str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client().ping():
                    return self
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start: {self.log()}") from None
            time.sleep(0.05)  # polling for the server to accept connections, with a deadline

    def client(self, **extra: Any) -> Any:
        """A redis-py client logged in as the scribed user; no reconnect retries (a call on a
        stopped server fails at once)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.tls else {}
        options = {"socket_timeout": 5, "decode_responses": True, "retry": Retry(NoBackoff(), 0), **tls, **extra}
        return redis.Redis(host="127.0.0.1", port=self.port, username=self.user, password=self.password, **options)

    def kill(self) -> None:
        """``kill -9``: nothing is flushed beyond what appendfsync already wrote."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def cluster_section(server: RedisServer, **extra: Any) -> dict[str, Any]:
    """The ``cluster:`` config section for ``server``."""
    section: dict[str, Any] = {"broker": server.url, "password_file": str(server.password_file)}
    if server.ca is not None:
        section["tls_ca_file"] = str(server.ca)
    section.update(extra)
    return section
