"""Tests for scribed.engine.cpushare: thread count from the cores other processes leave free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from scribed.engine import cpushare
from scribed.engine.cpushare import CoreShare


class Machine:
    """A fake /proc/stat and own CPU time, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0.0  # every core, every process
        self.own = 0.0

    def advance(self, seconds: float, *, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    monkeypatch.setattr(cpushare.os, "cpu_count", lambda: 2)
    return Machine()


def _share(machine: Machine, cores: int = 2) -> CoreShare:
    return CoreShare(cores, clock=lambda: machine.now, machine=lambda: machine.busy, own=lambda: machine.own)


def test_a_busy_core_is_given_back_and_taken_again_when_free(machine: Machine) -> None:
    share = _share(machine)
    calls: list[int] = []
    machine.advance(1.0, own_cores=2.0, other_cores=0.0)
    assert share.apply(calls.append) == 2 and calls == []  # unchanged: set_threads not called
    machine.advance(1.0, own_cores=1.0, other_cores=1.0)  # someone's build starts
    assert share.apply(calls.append) == 1 and calls == [1]
    machine.advance(1.0, own_cores=1.0, other_cores=0.9)
    assert share.apply(calls.append) == 1 and calls == [1]
    machine.advance(1.0, own_cores=1.0, other_cores=0.05)  # it ended
    assert share.apply(calls.append) == 2 and calls == [1, 2]


def test_never_fewer_than_one_thread_and_short_intervals_keep_the_answer(machine: Machine) -> None:
    share = _share(machine)
    machine.advance(1.0, own_cores=0.2, other_cores=2.0)
    assert share.threads() == 1
    machine.advance(0.1, own_cores=2.0, other_cores=0.0)  # too short to tell
    assert share.threads() == 1
    machine.advance(1.0, own_cores=2.0, other_cores=0.0)
    assert share.threads() == 2


def test_restart_forgets_a_busy_interval_and_takes_every_core_back(machine: Machine) -> None:
    share = _share(machine)
    calls: list[int] = []
    machine.advance(1.0, own_cores=1.0, other_cores=1.0)
    assert share.apply(calls.append) == 1 and calls == [1]
    machine.advance(2.0, own_cores=0.0, other_cores=1.0)  # the competitor runs on, then ends
    assert share.restart(calls.append) == 2 and calls == [1, 2]
    machine.advance(1.0, own_cores=2.0, other_cores=0.0)  # without restart: 2 s of 3 busy, 1 thread
    assert share.apply(calls.append) == 2 and calls == [1, 2]
    machine.advance(1.0, own_cores=1.0, other_cores=1.0)  # and a new competitor is still seen
    assert share.apply(calls.append) == 1 and calls == [1, 2, 1]
    assert share.restart(calls.append) == 2 and share.restart(calls.append) == 2
    assert calls == [1, 2, 1, 2]  # set_threads only when the count changes


def test_light_background_noise_does_not_cost_a_core(machine: Machine) -> None:
    share = _share(machine)
    machine.advance(1.0, own_cores=1.9, other_cores=0.3)
    assert share.threads() == 2


def test_without_proc_stat_every_core_is_used() -> None:
    share = CoreShare(4, machine=lambda: None)
    assert share.threads() == 4


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux only")
def test_a_real_busy_process_is_seen() -> None:
    """On the real /proc/stat: a spinning child process takes a core away (when there are 2+)."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2 or cores != os.cpu_count():
        pytest.skip("needs two cores, all of the machine's (/proc/stat counts every core)")
    share = CoreShare(cores)
    spinner = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"],
                               stdout=subprocess.PIPE)
    try:
        assert spinner.stdout is not None
        spinner.stdout.readline()  # it is spinning now
        # the reading must cover at least MIN_INTERVAL_S of the spinner's run (what is measured)
        share._sample()
        deadline = time.monotonic() + cpushare.MIN_INTERVAL_S * 1.5
        while time.monotonic() < deadline:
            time.sleep(0.05)
        assert share.threads() <= cores - 1
    finally:
        spinner.kill()
        spinner.wait()
