"""``scribed status``: what the daemon is doing, read from its journal (works while it runs).

Contract:
- Read-only; never blocks the daemon (SQLite WAL readers do not block the writer). Paths are
  shown with undecodable bytes escaped, so any file name prints (text and JSON alike).
- Exit status: 0 the daemon is running, 3 it is not (or never ran: no journal), like
  ``systemctl status``; a bad config exits 2 before this module runs.
- :func:`snapshot` is the one reading of the journal; the text view, ``--json`` and ``--follow``
  all show it. The JSON object is :data:`SCHEMA_VERSION` 1 (documented in the README); keys are
  only ever added, never renamed or removed, within one schema version.
- ``--follow`` redraws every second (the screen is cleared on a terminal; elsewhere each view
  follows the last) until Ctrl-C (exit 0) or the daemon stops (exit 3, after a last view).
- :func:`heartbeat_line` is the one-line summary the daemon sends to systemd and stores for this
  command (:class:`Heartbeat`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from scribed.config import Config
from scribed.daemon.journal import Journal
from scribed.daemon.journal_db import shown
from scribed.system.sdnotify import Notifier
from scribed.text import format_clock

SCHEMA_VERSION = 1
STALE_S = 60.0  # a heartbeat older than this: the daemon is not running (it beats every few seconds)
RUNNING, NOT_RUNNING = 0, 3
_CLEAR = "\x1b[H\x1b[2J"
_LABEL_WIDTH = 11  # "watching:" and two spaces: the same column in every view


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def heartbeat_line(journal: Journal, busy: Sequence[int]) -> str:
    """``N queued; transcribing NAME (d/t chunks)`` for each job in ``busy``."""
    line = f"{journal.counts()['queued']} queued"
    for job_id in busy:
        job = journal.get(job_id)
        if job:
            line += f"; transcribing {shown(job.path.name)} ({job.progress_done}/{job.progress_total or '?'} chunks)"
    return line


class Heartbeat:
    """Every ``every_s`` of loop time: systemd's watchdog ping, status line, and the journal's
    heartbeat (what ``scribed status`` reads). The watchdog is pinged only while the worker shows
    life: a busy worker silent for ``hung_s`` gets none, so systemd restarts a hung daemon."""

    def __init__(self, notifier: Notifier, journal: Journal, every_s: float, hung_s: float) -> None:
        self.notifier, self.journal, self.every_s, self.hung_s = notifier, journal, every_s, hung_s
        self.last = -math.inf

    def soon(self) -> None:
        """Beat at the next call (e.g. a new current file)."""
        self.last = -math.inf

    def beat(self, now: float, busy: Sequence[int], last_heard: float, modes: Mapping[Path, str]) -> None:
        if now - self.last < self.every_s:
            return
        self.last = now
        if not busy or now - last_heard < self.hung_s:
            self.notifier.watchdog()
        line = heartbeat_line(self.journal, busy)
        self.notifier.status(line)
        self.journal.set_meta(heartbeat=time.time(), status=line, watch={str(k): v for k, v in modes.items()})


# -- one reading of the journal ---------------------------------------------------------------------


def snapshot(cfg: Config, *, wall_clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The daemon's state as plain data: the ``--json`` object (schema in the module contract)."""
    path = cfg.service.journal_path
    view: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "journal": str(path), "has_run": path.exists(), "running": False, "pid": None,
        "heartbeat_age_s": None, "model": cfg.model.id, "device": None, "device_configured": cfg.model.device,
        "worker": None, "network": None, "watch": [],
        "queue": {"queued": 0, "working": 0, "waiting": 0}, "current": [],
        "totals": {"done": 0, "failed": 0, "skipped": 0, "gone": 0, "changed": 0},
        "backlog_audio_s": 0.0, "eta_s": None, "recent_failures": [],
    }  # fmt: skip
    if not view["has_run"]:
        return view
    journal = Journal(path, readonly=True)
    try:
        meta, counts = journal.meta(), journal.counts()
        beat = meta.get("heartbeat")
        age = wall_clock() - float(beat) if isinstance(beat, int | float) else None
        speed, backlog = journal.throughput(), journal.queued_audio_s()
        view.update(
            running=_alive(meta.get("pid")) and age is not None and age < STALE_S,
            pid=meta.get("pid") if isinstance(meta.get("pid"), int) else None,
            heartbeat_age_s=None if age is None else round(age, 1),
            model=meta.get("model") or cfg.model.id, device=meta.get("device"), worker=meta.get("worker"),
            network=_network(meta.get("network")),
            watch=[{"folder": shown(f), "mode": m} for f, m in dict(meta.get("watch") or {}).items()],  # type: ignore[call-overload]
            queue={"queued": counts["queued"], "working": counts["working"], "waiting": journal.waiting()},
            current=[{"path": shown(j.path), "done": j.progress_done, "total": j.progress_total or None}
                     for j in journal.jobs("working")],
            totals={k: counts[k] for k in ("done", "failed", "skipped", "gone", "changed")},
            backlog_audio_s=round(backlog, 1), eta_s=round(backlog / speed, 1) if backlog and speed else None,
            recent_failures=[{"path": shown(j.path), "error": j.last_error} for j in journal.jobs("failed", 5)],
        )  # fmt: skip
    finally:
        journal.close()
    if cfg.cluster.broker:  # cluster mode: the broker's queue and each worker (redis loads only here)
        from scribed.daemon import cluster_status

        view["cluster"] = cluster_status.snapshot(cfg)
    return view


def _network(detail: object) -> str | None:
    return str(detail).removeprefix("network: ") if detail else None


# -- the text view --------------------------------------------------------------------------------


def _device(view: Mapping[str, Any]) -> str:
    if view["device"]:
        current = view["running"] and view["worker"] in ("ready", "working")
        return str(view["device"]) + ("" if current else " (last known)")
    return f"not known yet (model.device: {view['device_configured']})"


def render(view: Mapping[str, Any]) -> list[str]:
    """The text view: one ``label:  value`` row per line, values aligned."""
    if not view["has_run"]:
        return [f"scribed has not run yet (no journal at {view['journal']})"]
    daemon = f"running (pid {view['pid']})" if view["running"] else "not running"
    queue, totals = view["queue"], view["totals"]
    later = f" ({queue['waiting']} waiting for a temporary error to clear)" if queue["waiting"] else ""
    rows: list[tuple[str, str]] = [
        ("daemon", daemon), ("model", str(view["model"])), ("device", _device(view)),
        ("worker", str(view["worker"] or "unknown")), ("network", view["network"] or "unknown"),
    ]  # fmt: skip
    rows += [("watching", f"{w['folder']} ({w['mode']})") for w in view["watch"]]
    rows.append(("queue", f"{queue['queued']} queued{later}, {queue['working']} in progress"))
    for job in view["current"]:
        rows.append(("current", f"{job['path']} ({job['done']}/{job['total']} chunks)" if job["total"]
                     else f"{job['path']} (starting)"))
    rows.append(("totals", f"{totals['done']} done, {totals['failed']} failed, {totals['skipped']} skipped, "
                 f"{totals['gone']} vanished" + (f", {totals['changed']} changing" if totals["changed"] else "")))
    if view["backlog_audio_s"]:
        eta = f"~{format_clock(view['eta_s'])}" if view["eta_s"] is not None else "unknown until the first file is done"
        rows.append(("backlog", f"{format_clock(view['backlog_audio_s'])} of audio; estimated time {eta}"))
    rows += [("failed", f"{f['path']}: {f['error']}") for f in view["recent_failures"]]
    if view.get("cluster"):
        from scribed.daemon import cluster_status

        rows += cluster_status.render(view["cluster"])
    return [f"{label + ':':<{_LABEL_WIDTH}}{value}" for label, value in rows]


def _exit(view: Mapping[str, Any]) -> int:
    return RUNNING if view["running"] else NOT_RUNNING


def print_status(cfg: Config, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the status once (text or JSON); 0 running, 3 not running."""
    out = out or sys.stdout
    view = snapshot(cfg)
    if as_json:
        print(json.dumps(view, ensure_ascii=False), file=out)
    else:
        print("\n".join(render(view)), file=out)
    return _exit(view)


def follow_status(cfg: Config, *, every_s: float = 1.0, out: TextIO | None = None) -> int:
    """Redraw the status every ``every_s`` until Ctrl-C (0) or the daemon is not running (3)."""
    out = out or sys.stdout
    tty = out.isatty()
    try:
        while True:
            view = snapshot(cfg)
            header = f"scribed status at {time.strftime('%H:%M:%S')} (every {every_s:g} s; Ctrl-C to stop)"
            print((_CLEAR if tty else "") + "\n".join([header, *render(view)]) + ("" if tty else "\n"),
                  file=out, flush=True)
            if not view["running"]:
                return NOT_RUNNING
            time.sleep(every_s)  # the refresh period of a live view
    except KeyboardInterrupt:
        return 0  # the user ended the view: not an error
