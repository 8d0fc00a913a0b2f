"""How many CPU threads the model may use right now: the cores other processes leave free.

Contract:
- :class:`CoreShare` reads the machine's busy time (``/proc/stat``) and this process's own CPU
  time; :meth:`CoreShare.threads` returns the number of cores of this process's affinity set
  that other processes did not keep busy since the previous reading, at least 1. Readings less
  than :data:`MIN_INTERVAL_S` apart return the previous answer (too short to tell).
- :meth:`CoreShare.apply` calls ``set_threads`` only when that number changed, and returns it.
- :meth:`CoreShare.restart` forgets the past: a new first reading now, and every core (through
  ``set_threads``) until a later reading shows another process busy. For a caller that knows the
  load just ended, such as the bench after its competitor exits: otherwise the next reading still
  averages the busy interval in, and the next model call runs on fewer threads on an idle machine.
- Where ``/proc/stat`` cannot be read (not Linux), every core is used, as before.
Standard library only; the engine passes ``torch.set_num_threads``.

Why: a background worker whose OpenMP team is as large as the machine stalls at every
parallel region waiting for the thread that shares a core with someone else's job (measured on
2 cores with one busy thread: 0.35 of idle throughput with 2 threads). Giving the busy core
back keeps the work flowing on the free one, and takes it again when it is free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MIN_INTERVAL_S = 0.5
# Another process counts as holding a core when it kept it this busy (of one core, 0..1).
BUSY_SHARE = 0.5


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _machine_busy_s(stat: str = "/proc/stat") -> float | None:
    """Seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open(stat, encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(x) for x in fields[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class CoreShare:
    """Tracks the cores other processes use; see the module contract."""

    def __init__(self, cores: int | None = None, *, clock: Callable[[], float] = time.monotonic,
                 machine: Callable[[], float | None] = _machine_busy_s,
                 own: Callable[[], float] = _own_cpu_s) -> None:
        self.cores = cores or _affinity()
        self._clock, self._machine, self._own = clock, machine, own
        self._last: tuple[float, float, float] | None = None
        self.current = self.cores
        self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        busy = self._machine()
        if busy is None:
            return None
        reading = (self._clock(), busy, self._own())
        previous, self._last = self._last, reading
        return previous

    def restart(self, set_threads: Callable[[int], None]) -> int:
        """Forget earlier readings and use every core (``set_threads`` is called when that changes
        the count); see the module contract. Returns the thread count."""
        self._last = None
        self._sample()
        if self.current != self.cores:
            self.current = self.cores
            set_threads(self.cores)
        return self.current

    def threads(self) -> int:
        """Cores free of other processes since the last reading (1..cores)."""
        if self._last is not None and self._clock() - self._last[0] < MIN_INTERVAL_S:
            return self.current
        previous = self._sample()
        if previous is None or self._last is None:
            return self.current
        elapsed = self._last[0] - previous[0]
        others = max(0.0, (self._last[1] - previous[1]) - (self._last[2] - previous[2])) / elapsed
        # machine-wide busy time includes cores outside our affinity set: count only what
        # exceeds them, and a core as taken once another process held it half the time
        outside = max(0, (os.cpu_count() or self.cores) - self.cores)
        taken = max(0.0, others - outside)
        self.current = max(1, min(self.cores, self.cores - int(taken + (1 - BUSY_SHARE))))
        return self.current

    def apply(self, set_threads: Callable[[int], None]) -> int:
        """Measure and, when the answer changed, call ``set_threads``; returns the thread count."""
        before = self.current
        now = self.threads()
        if now != before:
            set_threads(now)
        return now
