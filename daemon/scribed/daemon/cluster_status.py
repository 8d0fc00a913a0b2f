"""Cluster mode in ``scribed status``: the broker's queue and each worker, read from the broker.

Contract:
- :func:`snapshot` reads, never writes: the number of messages waiting in ``cluster.queue`` and
  every worker that beat within :data:`SEEN_S` (name, host, pid, model, device, state, current
  recordings, seconds since its last heartbeat, by the broker's clock). It never raises and
  waits at most about ``timeout_s``: a broker it cannot read is reported in ``error``. The
  password is never part of the view.
- :func:`render` is the text rows (``label, value``) the status view appends.
- Standard library, redis (through :mod:`scribed.system.broker`) and the wire keys only.
"""

from __future__ import annotations

import json
from typing import Any

from scribed import wire
from scribed.config import Config
from scribed.system import broker

SEEN_S = 120.0


def snapshot(cfg: Config, *, timeout_s: float = 1.0) -> dict[str, Any]:
    """The cluster's state as plain data (see the module contract)."""
    view: dict[str, Any] = {"broker": None, "queue": cfg.cluster.queue, "waiting": None, "workers": [], "error": None}
    try:
        where = broker.address(cfg.cluster)
        view["broker"] = where.url
        client = broker.client(where, broker.password(cfg.cluster), timeout_s=timeout_s, retries=0)
    except Exception as exc:  # a config problem: say it, as the rest of the status still shows
        view["error"] = str(exc)
        return view
    keys = wire.Keys(cfg.cluster.queue)
    try:
        now = float(client.time()[0])
        view["waiting"] = int(client.llen(cfg.cluster.queue))
        names = client.zrangebyscore(keys.workers, now - SEEN_S, "+inf")
        entries = client.mget([keys.worker(n) for n in names]) if names else []
        for text in entries:
            entry = _entry(text, now)
            if entry is not None:
                view["workers"].append(entry)
    except Exception as exc:  # unreachable, refused, timed out: reported, never raised
        view["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    view["workers"].sort(key=lambda w: w["name"])
    return view


def _entry(text: str | None, now: float) -> dict[str, Any] | None:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    seen = data.get("seen")
    return {"name": data["name"], "host": str(data.get("host", "?")), "pid": data.get("pid"),
            "model": str(data.get("model", "?")), "device": str(data.get("device", "?")),
            "state": str(data.get("state", "?")), "current": [str(c) for c in data.get("current") or []],
            "last_seen_s": round(now - seen, 1) if isinstance(seen, int | float) else None}


def render(view: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, value)`` rows for the text status."""
    waiting = "?" if view["waiting"] is None else str(view["waiting"])
    rows = [("cluster", f"{view['broker'] or 'broker not set'}, queue {view['queue']!r}: {waiting} message(s) waiting, "
                        f"{len(view['workers'])} worker(s)")]
    if view["error"]:
        rows.append(("cluster", f"broker not readable: {view['error']}"))
    for w in view["workers"]:
        doing = f"working on {', '.join(w['current'])}" if w["current"] else w["state"]
        rows.append(("worker", f"{w['name']} on {w['host']} ({w['device']}): {doing}; seen {w['last_seen_s']} s ago"))
    return rows
