"""A watchdog that takes a local Ray down with the driver that started it, however it ends.

When the driver of a local Ray is killed (``kill -9``, the OOM killer), Ray's own processes
follow it within seconds, but the raylet's two agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) notice their raylet is gone and then try to report it to the dead
GCS, which they wait on for its reconnect timeout: they stayed ~60–120 s (issue 21). Ray
always starts them (the raylet launches both; ``include_dashboard=False`` only drops the
dashboard server), so placerl cannot leave them out; it makes sure they end with the driver.

``Reaper.start(roots)`` runs this module as a small process of its own session (Ctrl-C in the
terminal does not reach it) with a pipe from the driver. It follows the process tree under
``roots`` — the processes ``ray.init`` started — every ``POLL_S``, remembering each process
with its start time (a reused pid is never mistaken for it). When the pipe closes — the
driver called ``stop()`` after ``ray.shutdown()``, or the driver died and the kernel closed
it — it sends SIGKILL to every remembered process still alive, and exits. Linux only (it
reads ``/proc``); elsewhere it is not started.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

POLL_S = 0.2  # how often the tree is read while the driver lives
PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: gone or a zombie)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": the comm may hold spaces
    return None if fields[0] == "Z" else int(fields[19])


def children_map() -> dict[int, list[int]]:
    """Parent pid → child pids, for every process now."""
    out: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(parent, []).append(int(entry.name))
    return out


def descendants(roots: Iterable[int]) -> set[int]:
    """``roots`` and every process below them now."""
    kids, found, todo = children_map(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += kids.get(pid, [])
    return found


def alive(known: dict[int, int]) -> list[int]:
    """The remembered processes that still run (same pid, same start time)."""
    return [pid for pid, started in known.items() if start_time(pid) == started]


def watch(roots: list[int]) -> None:
    """Follow the tree under ``roots`` until standard input closes; then kill it."""
    known: dict[int, int] = {}
    while True:
        for pid in descendants([*roots, *known]):
            if pid not in known and (started := start_time(pid)) is not None:
                known[pid] = started
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # EOF: the driver stopped us, or died
    for pid in alive(known):
        with contextlib.suppress(OSError):  # it ended meanwhile
            os.kill(pid, signal.SIGKILL)


class Reaper:
    """The driver's end: start the watchdog over ``roots``; ``stop`` after ray.shutdown."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    @classmethod
    def start(cls, roots: Iterable[int]) -> Reaper | None:
        if not sys.platform.startswith("linux") or not PROC.is_dir():
            return None
        process = subprocess.Popen(
            [sys.executable, __file__, *map(str, roots)],  # stdlib only: up at once
            stdin=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C to the driver's process group does not reach it
            close_fds=True,
        )
        return cls(process)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe: the watchdog kills what is left of Ray's processes and exits."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()


def children_of(pid: int) -> set[int]:
    """The direct children of ``pid`` now."""
    return set(children_map().get(pid, []))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch([int(arg) for arg in sys.argv[1:]])
