"""Cluster-mode throughput on this machine: 1, 2 and 3 ``scribed worker`` processes (a benchmark,
not a test; no pass/fail).

For each worker count it starts a fresh cluster (tests/integration/cluster_harness.py: a real
redis-server on loopback, the workers, a coordinator ``scribed run``), delivers the same
recordings into the watched folder at once, and measures the time from delivery until the
journal says every one is done. A live single-host ``scribed run`` (its own local worker) on
the same recordings is the baseline. The model is the tests' tiny Qwen3-ASR checkpoint by default (so the figures
measure scribed's own per-recording cost: dispatch, broker round trips, decode, write) or any
local checkpoint with ``--model``.

    python tools/cluster_bench.py [--recordings 200] [--seconds 2] [--workers 1,2,3] [--prefetch 8]
                                  [--model DIR] [--json]

Honest limit: every worker here shares this machine's cores (and the coordinator and Redis run
on them too), so more workers cannot add compute; on N GPU hosts each worker brings its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration"), str(ROOT / "tests" / "e2e"),
                str(ROOT / "daemon")]

from cluster_harness import Cluster  # noqa: E402  (test helpers, on the path set above)
from e2e_helpers import Env, wait_for, wav  # noqa: E402


def tiny_model() -> Path:
    cache = Path(os.environ.get("SCRIBED_TEST_CACHE", ROOT / ".pytest_cache" / "scribed-fixtures"))
    found = sorted(cache.glob("tiny-asr-v*"))
    if not found:
        raise SystemExit(f"no tiny model in {cache}: run the tests once (they build it), or pass --model")
    return found[-1]


def recordings(folder: Path, n: int, seconds: float) -> list[Path]:
    return [wav(folder / f"memo {i:03d}.wav", seconds=seconds, seed=i) for i in range(n)]


def run_cluster(model: Path, workers: int, n: int, seconds: float, prefetch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="scribed-bench-") as tmp:
        cluster = Cluster(Path(tmp), model, visibility_timeout_s=600, prefetch=prefetch)
        try:
            cluster.redis.start()
            cluster.start_workers(workers)
            cluster.start_coordinator()
            staged = recordings(Path(tmp) / "staging", n, seconds)
            start = time.monotonic()
            for path in staged:
                os.rename(path, cluster.inbox / path.name)
            wait_for(lambda: cluster.done() == n, timeout=3600, what="all done")
            elapsed = time.monotonic() - start
        finally:
            cluster.stop_all()
    return {"workers": workers, "seconds": elapsed, "recordings_per_s": n / elapsed,
            "x_realtime": n * seconds / elapsed}


def run_single_host(model: Path, n: int, seconds: float) -> dict[str, float]:
    """The same measurement with a live single-host ``scribed run`` (its own spawned worker)."""
    with tempfile.TemporaryDirectory(prefix="scribed-bench-") as tmp:
        env = Env(Path(tmp), model)
        try:
            env.start()
            staged = recordings(Path(tmp) / "staging", n, seconds)
            start = time.monotonic()
            for path in staged:
                os.rename(path, env.inbox / path.name)
            wait_for(lambda: sum(s == "done" for s in env.states().values()) == n, timeout=3600, what="all done")
            elapsed = time.monotonic() - start
        finally:
            env.stop_all()
    return {"workers": 0, "seconds": elapsed, "recordings_per_s": n / elapsed, "x_realtime": n * seconds / elapsed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recordings", type=int, default=200)
    p.add_argument("--seconds", type=float, default=2.0, help="length of each recording")
    p.add_argument("--workers", default="1,2,3")
    p.add_argument("--prefetch", type=int, default=8, help="cluster.prefetch: recordings per message")
    p.add_argument("--model", type=Path, help="a local Qwen3-ASR checkpoint (default: the tests' tiny model)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    model = args.model or tiny_model()
    rows = [run_single_host(model, args.recordings, args.seconds)]
    rows += [run_cluster(model, int(w), args.recordings, args.seconds, args.prefetch) for w in args.workers.split(",")]
    report = {"model": str(model), "recordings": args.recordings, "recording_s": args.seconds,
              "prefetch": args.prefetch, "cpus": os.cpu_count(), "runs": rows}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.recordings} recordings of {args.seconds:g} s, model {model.name}, prefetch {args.prefetch}, "
          f"{os.cpu_count()} CPUs")
    for r in rows:
        what = "single host (local worker)" if r["workers"] == 0 else f"cluster, {r['workers']} worker(s)"
        print(f"  {what:28s} {r['seconds']:7.1f} s  {r['recordings_per_s']:6.2f} rec/s"
              f"  {r['x_realtime']:6.1f}x realtime")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
