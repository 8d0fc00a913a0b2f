"""A whole cluster on this machine, for tests/integration/test_cluster.py and tools/cluster_bench.py.

:class:`Cluster` is one redis-server (tests/cluster_helpers.py: loopback, ACL user and password,
append-only file), N ``scribed worker`` processes with the tiny model, and one coordinator
``scribed run`` process, each a real process with its own log file. The workers see the share
through their own "mount" (a second path to the inbox, mapped with ``cluster.path_map``), as a
second host would.

Test hooks (a ``sitecustomize`` on the processes' PYTHONPATH; test code, never part of scribed):
- the e2e gate hook (tests/e2e/e2e_helpers.py): a worker holding a batch with a recording named
  ``held*`` waits for the gate, so a test can kill it provably mid-job; with ``probe`` the
  worker (while holding) and the coordinator (for recordings named ``probe*``) try a
  connection to 127.0.0.1:9 and record what happened;
- until ``scribed run`` chooses the cluster handle itself when ``cluster.broker`` is set, the
  coordinator gets it the way the daemon is meant to: ``Daemon(cfg,
  worker_factory=cluster_worker_factory(cfg))`` (a no-op once run_daemon passes one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from e2e_helpers import GATE_HOOK, Env, Gate, wait_for

from cluster_helpers import RedisServer, cluster_section

ROOT = Path(__file__).resolve().parents[2]

COORDINATOR_HOOK = '''
def wrap_service(service):
    base = service.Daemon

    class ClusterDaemon(base):
        def __init__(self, cfg, **kw):
            if cfg.cluster.broker and "worker_factory" not in kw:
                from scribed.daemon.cluster import cluster_worker_factory
                kw["worker_factory"] = cluster_worker_factory(cfg)
            super().__init__(cfg, **kw)

    service.Daemon = ClusterDaemon


WRAP["scribed.daemon.service"] = wrap_service
'''

WORKER_MAIN = """
import sys
from scribed import logs
from scribed.config import load_config
from scribed.engine.cluster_worker import worker_command
logs.setup("INFO", process="scribed-worker")
sys.exit(worker_command(load_config(sys.argv[1])))
"""


class Cluster:
    def __init__(self, tmp: Path, model: Path, *, visibility_timeout_s: float = 8, prefetch: int = 2,
                 probe: bool = False) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.inbox = tmp / "share" / "inbox"
        self.inbox.mkdir(parents=True)
        mount = tmp / "mnt"
        mount.mkdir()
        (mount / "share").symlink_to(tmp / "share")  # the workers' mount point of the share
        self.redis = RedisServer(tmp / "redis")
        cluster = cluster_section(self.redis, visibility_timeout_s=visibility_timeout_s, prefetch=prefetch)
        model_section = {"id": str(model), "device": "cpu", "batch_size": 8}
        self.coordinator_config = self._config("coordinator.yaml", {
            "watch": {"folders": [str(self.inbox)], "settle_s": 0.3, "poll_interval_s": 0.3,
                      "rescan_interval_s": 30},
            "model": model_section, "service": {"state_dir": str(self.state), "stop_timeout_s": 60},
            "cluster": cluster})
        self.worker_config = self._config("worker.yaml", {
            "model": model_section, "service": {"state_dir": str(tmp / "worker-state")},
            "cluster": {**cluster, "path_map": {str(tmp / "share"): str(mount / "share")}}})
        self.gate = Gate(tmp / "gate")
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(GATE_HOOK + COORDINATOR_HOOK)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(ROOT / "daemon")]),
                        PYTHONUNBUFFERED="1", SCRIBED_TEST_GATE=str(self.gate.path))
        self.env.pop("SCRIBED_BROKER_PASSWORD", None)
        if probe:
            self.env["SCRIBED_TEST_NET_PROBE"] = "1"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.coordinators: list[subprocess.Popen[bytes]] = []

    def _config(self, name: str, data: dict) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        return path

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as out:
            return subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp)

    # -- processes ---------------------------------------------------------------------------------
    def start_workers(self, n: int) -> None:
        argv = [sys.executable, "-c", WORKER_MAIN, str(self.worker_config)]
        new = [self._spawn(argv, f"worker{len(self.workers) + i}.log") for i in range(n)]
        self.workers += new
        expected = self.live_workers() + n

        def up() -> bool:
            return self.live_workers() >= expected or any(p.poll() is not None for p in new)

        wait_for(up, timeout=300, what="workers connected")
        assert all(p.poll() is None for p in new), self.logs()

    def start_coordinator(self) -> subprocess.Popen[bytes]:
        i = len(self.coordinators)
        proc = self._spawn([sys.executable, "-m", "scribed.cli", "run", "--config", str(self.coordinator_config)],
                           f"coordinator{i}.log")
        self.coordinators.append(proc)
        wait_for(lambda: proc.poll() is not None or (self.meta().get("pid") == proc.pid
                                                      and self.meta().get("ready_pid") == proc.pid),
                 timeout=120, what="coordinator ready")
        assert proc.poll() is None, self.logs()
        return proc

    def live_workers(self) -> int:
        """Workers whose heartbeat is fresh (by the broker's clock, as the coordinator counts them)."""
        try:
            redis = self.redis.client()
            return int(redis.zcount("scribed:scribed:workers", float(redis.time()[0]) - 30, "+inf"))
        except Exception:
            return 0

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every process still running; returns their exit statuses."""
        codes: dict[str, int | None] = {}
        procs = [(f"coordinator{i}", p) for i, p in enumerate(self.coordinators)] + \
                [(f"worker{i}", p) for i, p in enumerate(self.workers)]
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for name, proc in procs:
            try:
                codes[name] = proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(30)
        self.redis.stop()
        return codes

    # -- what happened (the journal, read as the e2e tests read it) ---------------------------------
    db, meta, states = Env.db, Env.meta, Env.states

    def done(self) -> int:
        return sum(s == "done" for s in self.states().values())

    def logs(self, tail: int | None = 6000) -> str:
        """Every process's log (the last ``tail`` characters of each; None: all of it)."""
        return "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-tail if tail else 0:]}"
                         for p in sorted(self.tmp.glob("*.log")))
