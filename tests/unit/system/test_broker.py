"""Tests for scribed.system.broker: the broker address, its password, TLS, the Celery settings.

Connections go to a real redis-server on loopback (tests/cluster_helpers.py), with an ACL user and
a password, and once over TLS with a throw-away CA.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
from pychild import run_python

from cluster_helpers import RedisServer
from scribed.config import ClusterConfig
from scribed.errors import ConfigError
from scribed.system import broker


def cluster(**kw: object) -> ClusterConfig:
    return ClusterConfig(**{"broker": "redis://127.0.0.1:6379/0", **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("url, expected", [
    ("redis://gpu-redis", ("redis://gpu-redis:6379/0", "gpu-redis", 6379, 0, None, False)),
    ("rediss://scribed@10.0.0.5:6380/3", ("rediss://scribed@10.0.0.5:6380/3", "10.0.0.5", 6380, 3, "scribed", True)),
    ("redis://[::1]:7000", ("redis://[::1]:7000/0", "::1", 7000, 0, None, False)),
])
def test_address(url: str, expected: tuple) -> None:
    b = broker.address(cluster(broker=url))
    assert (b.url, b.host, b.port, b.db, b.username, b.tls) == expected


@pytest.mark.parametrize("url, says", [
    ("redis://:hunter2@host:6379/0", "password must not be in the URL"),
    ("redis://user:hunter2@host/0", "password must not be in the URL"),
    ("rediss://host/0?ssl_cert_reqs=none", "no query options"),
    ("redis://host:port/0", "port number"),
    ("redis://host/zero", "redis://HOST"),
    ("redis:///0", "redis://HOST"),
])
def test_address_refuses(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        broker.address(cluster(broker=url))
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_tls_ca_file_only_for_rediss(tmp_path: Path) -> None:
    assert broker.address(cluster(broker="rediss://h", tls_ca_file=tmp_path / "ca.pem")).ca_file == tmp_path / "ca.pem"
    assert broker.address(cluster(broker="redis://h", tls_ca_file=tmp_path / "ca.pem")).ca_file is None


def test_password_from_file_or_environment(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nsecond line ignored\n")
    secret.chmod(0o640)
    assert broker.password(cluster(password_file=secret), env={}) == "s3cret"
    assert broker.password(cluster(), env={broker.PASSWORD_ENV: "from-env"}) == "from-env"
    assert broker.password(cluster(), env={}) is None


@pytest.mark.parametrize("setup, says", [
    (lambda p: (p.write_text("s3cret\n"), p.chmod(0o644)), "readable by every user"),
    (lambda p: (p.write_text("\n"), p.chmod(0o600)), "is empty"),
    (lambda p: None, "cannot be read"),
    (lambda p: (p.with_name("real").write_text("s3cret\n"), p.symlink_to("real")), "cannot be read"),
])
def test_password_file_problems(tmp_path: Path, setup, says: str) -> None:
    path = tmp_path / "pw"
    setup(path)
    with pytest.raises(ConfigError) as caught:
        broker.password(cluster(password_file=path), env={})
    assert says in str(caught.value) and "s3cret" not in str(caught.value)


def test_celery_settings_both_sides_rely_on() -> None:
    app = broker.celery_app(cluster(queue="team", visibility_timeout_s=600), broker.address(cluster()), "pw",
                            timeout_s=1.0)
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"  # never pickle from a broker
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.worker_pool == "solo" and conf.worker_enable_remote_control is False
    assert conf.task_default_queue == "team" and conf.broker_transport_options["visibility_timeout"] == 600
    assert conf.broker_password == "pw" and "pw" not in conf.broker_url
    app.close()


def test_client_logs_in_as_the_acl_user(tmp_path: Path, allow_loopback: None) -> None:
    server = RedisServer(tmp_path).start()
    try:
        cfg = cluster(broker=server.url, password_file=server.password_file)
        client = broker.client(broker.address(cfg), broker.password(cfg), timeout_s=2.0)
        assert client.ping() and client.acl_whoami() == "scribed"
        client.close()
        import redis

        wrong = broker.client(broker.address(cfg), "not-the-password", timeout_s=2.0, retries=0)
        with pytest.raises(redis.exceptions.AuthenticationError) as caught:
            wrong.ping()
        assert "not-the-password" not in str(caught.value)
        wrong.close()
    finally:
        server.stop()


def test_client_over_tls_checks_the_certificate(tmp_path: Path, allow_loopback: None) -> None:
    server = RedisServer(tmp_path, tls=True).start()
    try:
        good = cluster(broker=server.url, password_file=server.password_file, tls_ca_file=server.ca)
        client = broker.client(broker.address(good), broker.password(good), timeout_s=2.0)
        assert client.ping()
        client.close()
        import redis

        system_cas = cluster(broker=server.url, password_file=server.password_file)  # our CA is not trusted there
        client = broker.client(broker.address(system_cas), broker.password(system_cas), timeout_s=2.0, retries=0)
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            client.ping()
        assert "certificate" in str(caught.value).lower()
        client.close()
        app = broker.celery_app(good, broker.address(good), broker.password(good), timeout_s=2.0)
        assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(server.ca)}
        app.send_task("scribed.transcribe", args=[{"v": 1}], queue="scribed", retry=False)  # Celery over TLS too
        app.close()
        assert server.client().llen("scribed") == 1
    finally:
        server.stop()


def test_allow_lets_exactly_the_broker_through_the_guard() -> None:
    proc = run_python(
        """
        import json, socket
        from scribed.config import ClusterConfig
        from scribed.system import broker, netguard
        b = broker.address(ClusterConfig(broker="redis://localhost:6390/0"))
        netguard.install_network_guard()
        endpoint = broker.allow(b)
        out = {"addresses": sorted(endpoint.addresses), "port": endpoint.port}
        for port in (6390, 6391):
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                out[port] = "connected"
            except OSError as exc:
                out[port] = type(exc).__name__
        print(json.dumps(out))
        """
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["port"] == 6390 and out["addresses"]
    assert out["6390"] == "ConnectionRefusedError"  # allowed: nothing listens there
    assert out["6391"] == "NetworkBlockedError"
