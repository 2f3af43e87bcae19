"""A local Ray ends with its driver, even after kill -9 (issue 21.10).

Before: the raylet's agents (ray::DashboardAgent, ray::RuntimeEnvAgent) outlived a killed
driver by 60–120 s. Each test runs a driver in a subprocess, lists every process under it
once Ray runs, ends the driver, and waits a bounded time for all of them to be gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from placerl.runtime.ray.reaper import descendants, start_time

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="/proc")]

DRIVER = """
import sys, time
import ray
from placerl.runtime.ray.group import connect, disconnect

assert connect(None)
print(ray.get(ray.remote(lambda: "ready").remote()), flush=True)
if sys.argv[1] == "clean":
    disconnect()
    print("done", flush=True)
time.sleep(600)
"""
BOUND_S = 15.0  # every Ray process of the session gone by then


def _driver(mode: str) -> tuple[subprocess.Popen, dict[int, int]]:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode], stdout=subprocess.PIPE, text=True, env=env
    )
    assert driver.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # the agents start after the raylet answers
    tree = {pid: start_time(pid) for pid in descendants([driver.pid]) if pid != driver.pid}
    return driver, {pid: t for pid, t in tree.items() if t is not None}


def _left(tree: dict[int, int]) -> list[str]:
    """What still runs of ``tree`` within BOUND_S (empty: everything ended)."""
    deadline = time.monotonic() + BOUND_S
    while True:
        left = [pid for pid, started in tree.items() if start_time(pid) == started]
        if not left or time.monotonic() > deadline:
            return [_name(pid) for pid in left]
        time.sleep(0.5)


def _name(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:80]
    except OSError:
        return str(pid)


def test_a_killed_driver_leaves_no_ray_process():
    driver, tree = _driver("kill")
    names = [_name(pid) for pid in tree]
    assert any("raylet" in n for n in names) and any("DashboardAgent" in n for n in names)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert _left(tree) == []


def test_a_clean_disconnect_leaves_no_ray_process():
    driver, tree = _driver("clean")
    try:
        assert driver.stdout.readline().strip() == "done"
        assert _left(tree) == []
    finally:
        driver.kill()
        driver.wait()
