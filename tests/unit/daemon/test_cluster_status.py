"""Tests for scribed.daemon.cluster_status: the queue and the workers as ``scribed status`` shows
them, read from a real redis-server where workers beat with their own ledger."""

from __future__ import annotations

from pathlib import Path

from cluster_helpers import RedisServer, cluster_section
from scribed import wire
from scribed.config import parse_config
from scribed.daemon import cluster_status
from scribed.engine.cluster_ledger import Ledger


def test_queue_and_workers(tmp_path: Path, allow_loopback: None) -> None:
    server = RedisServer(tmp_path).start()
    try:
        cfg = parse_config({"cluster": cluster_section(server)})
        redis = server.client()
        redis.lpush("scribed", "m1", "m2")
        gpu1 = Ledger(redis, wire.Keys("scribed"), "scribed-10@gpu1")
        gpu1.beat({"host": "gpu1", "pid": 10, "model": "Qwen/Qwen3-ASR-0.6B-hf", "device": "NVIDIA H100",
                   "state": "working", "current": ["/srv/share/inbox/a.m4a"]})
        Ledger(redis, wire.Keys("scribed"), "scribed-11@gpu2").beat({"host": "gpu2", "state": "ready"})
        redis.zadd(wire.Keys("scribed").workers, {"scribed-9@gone": 1.0})  # beat long ago: not shown
        view = cluster_status.snapshot(cfg)
        assert view["error"] is None and view["waiting"] == 2 and view["broker"] == server.url
        assert [w["name"] for w in view["workers"]] == ["scribed-10@gpu1", "scribed-11@gpu2"]
        assert view["workers"][0]["current"] == ["/srv/share/inbox/a.m4a"] and view["workers"][0]["last_seen_s"] < 60
        rows = cluster_status.render(view)
        assert rows[0] == ("cluster", f"{server.url}, queue 'scribed': 2 message(s) waiting, 2 worker(s)")
        assert rows[1][1].startswith("scribed-10@gpu1 on gpu1 (NVIDIA H100): working on /srv/share/inbox/a.m4a")
        assert server.password not in repr(view) + repr(rows)
    finally:
        server.stop()
    down = cluster_status.snapshot(cfg, timeout_s=0.5)
    assert down["waiting"] is None and "ConnectionError" in down["error"]
    assert cluster_status.render(down)[1][1].startswith("broker not readable")


def test_a_bad_setting_is_reported_not_raised() -> None:
    view = cluster_status.snapshot(parse_config({"cluster": {"broker": "redis://:pw@host/0"}}))
    assert "password must not be in the URL" in view["error"] and view["workers"] == []
