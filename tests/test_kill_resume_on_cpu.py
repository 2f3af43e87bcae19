"""A SIGKILL at a chosen system call of a checkpoint write, rename, prune or export, then
``--resume``: the final weights are bitwise those of an uninterrupted run, and at no point is
anything on disk damaged (every ``step_*`` and ``policy/`` reads completely).

The run goes under ``strace -e inject=SYSCALL:signal=KILL:when=N``. N is found in a trace of
the uninterrupted run: the N-th call of that syscall by the main thread is the one that
touches the chosen path (strace counts per thread; with ``PYTHONDONTWRITEBYTECODE`` the runs
make the same calls in the same order). Each trial also checks, from its own trace, that the
kill hit that very call. ``PLACERL_KILL_TRIALS=all`` runs every point found, not the handful
kept for CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from placerl.checkpoint import list_checkpoints, read_checkpoint, read_weights
from tests.conftest import fast_overrides

pytestmark = pytest.mark.slow
SYSCALLS = ("rename", "renameat", "renameat2", "unlinkat", "openat")
_LINE = re.compile(r"^(\d+) +(\w+)\((.*)")


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True)
    return probe.returncode == 0


if not _strace_works():
    pytest.skip("strace is not available (or ptrace is not permitted)", allow_module_level=True)


def _env():
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    return env


def _train(config, model_dir, run_dir, *extra, strace=()):
    args = [*fast_overrides(model_dir, run_dir, "sft", 3), "trainer.keep_checkpoints=1", *extra]
    cmd = [*strace, sys.executable, "-m", "placerl.cli", "train", str(config), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _traced(trace: Path) -> list[str]:
    calls = ",".join(SYSCALLS)
    return ["strace", "-f", "-qq", "-e", "signal=none", "-e", f"trace={calls}", "-o", str(trace)]


def _main_calls(trace: Path) -> list[tuple[str, int, str]]:
    """(syscall, its count so far in the main thread, arguments) for the main thread's calls."""
    out, counts, main = [], {}, None
    for line in trace.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        pid, name, args = match.groups()
        main = main or pid
        if pid != main or name not in SYSCALLS:
            continue
        counts[name] = counts.get(name, 0) + 1
        out.append((name, counts[name], args))
    return out


_DELETE = r"^\d+, \"(config|model|generation|tokenizer|chat)"  # rmtree: unlinkat(dirfd, name)
WANTED = {  # label: (syscall, pattern of its arguments), in the order they happen
    "config write": ("openat", r"\.tmp-config\.yaml-"),
    "ckpt weights write": ("openat", r"\.tmp-step_000002-\d+/policy/\.tmp"),
    "ckpt state write": ("openat", r"\.tmp-step_000002-\d+/trainer_state\.json"),
    "ckpt rename": ("rename", r"\.tmp-step_000002-\d+\", \"[^\"]*/step_000002\""),
    "prune rename": ("rename", r"/step_000001\", \"[^\"]*/\.trash-step_000001-"),
    "prune delete": ("unlinkat", _DELETE),
    "export write": ("openat", r"\.tmp-policy-\d+/\.tmp"),
    "export rename": ("rename", r"\.tmp-policy-\d+\", \"[^\"]*/policy\""),
}
WANTED_RESUMED = {  # the resume of a finished run re-exports policy/ over the old one
    "re-export swap": ("renameat2", r"\.tmp-policy-\d+\", AT_FDCWD, \"[^\"]*/policy\""),
    "re-export delete": ("unlinkat", _DELETE),
}


def _points(calls, wanted: dict) -> dict[str, tuple[str, int, str]]:
    """Kill points by label: the first call matching each pattern after the previous one."""
    found, start = {}, 0
    for label, (name, pattern) in wanted.items():
        for index in range(start, len(calls)):
            syscall, _, args = calls[index]
            if syscall == name and re.search(pattern, args):
                found[label], start = calls[index], index + 1
                break
    return found


# "prune delete" (the same prune as "prune rename", one syscall later) runs with
# PLACERL_KILL_TRIALS=all
CI_POINTS = ["ckpt weights write", "prune rename", "export rename"]
CI_POINTS += ["re-export swap"]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """An uninterrupted run traced, then a traced resume of the finished run (re-export)."""
    root = tmp_path_factory.mktemp("kill")
    config = root / "c.yaml"
    config.write_text("stage: sft\n")
    run_dir = root / "straight"
    first = _train(config, tiny_model_dir, run_dir, strace=_traced(root / "run.trace"))
    assert first.returncode == 0, first.stderr
    again = _train(config, tiny_model_dir, run_dir, "--resume", strace=_traced(root / "re.trace"))
    assert again.returncode == 0, again.stderr
    calls = {False: _main_calls(root / "run.trace"), True: _main_calls(root / "re.trace")}
    weights = load_file(run_dir / "policy" / "model.safetensors")
    return root, config, run_dir, calls, weights


def _labels():
    if os.environ.get("PLACERL_KILL_TRIALS") == "all":
        return [*WANTED, *WANTED_RESUMED]
    return CI_POINTS


def _assert_intact(run_dir: Path) -> None:
    for _, path in list_checkpoints(run_dir / "checkpoints"):
        read_checkpoint(path, ["policy"])  # raises on anything missing or truncated
        assert (path / "policy" / "config.json").is_file()
    if (run_dir / "policy").exists():
        read_weights(run_dir / "policy")
        assert (run_dir / "policy" / "config.json").is_file()


def _trial(reference, model_dir, name: str, syscall: str, count: int, resume: bool, pattern):
    """Kill at the ``count``-th ``syscall``, check the disk, resume, check the result."""
    root, config, straight, _, weights = reference
    run_dir = root / re.sub(r"\W+", "_", name)
    if resume:  # kill the resume of a finished run, while it re-exports
        shutil.copytree(straight, run_dir)
    trace = root / f"{run_dir.name}.trace"
    inject = ["-e", f"inject={syscall}:signal=KILL:when={count}"]
    extra = ("--resume",) if resume else ()
    killed = _train(config, model_dir, run_dir, *extra, strace=[*_traced(trace), *inject])
    assert killed.returncode in (-9, 137), f"not killed at {name}: {killed.stderr[-2000:]}"
    last = [c for c in _main_calls(trace) if c[0] == syscall][-1]  # the call that was killed
    assert last[1] == count and re.search(pattern, last[2]), f"killed at {last}, not {name}"

    _assert_intact(run_dir)
    done = _train(config, model_dir, run_dir, "--resume")
    assert done.returncode == 0, done.stderr
    _assert_intact(run_dir)
    after = load_file(run_dir / "policy" / "model.safetensors")
    assert after.keys() == weights.keys()
    assert all(torch.equal(after[k], weights[k]) for k in weights), "resumed weights differ"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3]
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [3]
    leftovers = [p for d in (run_dir, run_dir / "checkpoints") for p in d.glob(".*")]
    assert not leftovers, leftovers
    shutil.rmtree(run_dir)


@pytest.mark.parametrize("label", _labels())
def test_kill_at_syscall_then_resume_is_exact(reference, tiny_model_dir, label):
    resume = label in WANTED_RESUMED
    wanted = WANTED_RESUMED if resume else WANTED
    points = _points(reference[3][resume], wanted)
    assert label in points, f"no {label!r} call in the reference trace"
    syscall, count, _ = points[label]
    _trial(reference, tiny_model_dir, label, syscall, count, resume, wanted[label][1])


@pytest.mark.skipif(
    os.environ.get("PLACERL_KILL_TRIALS") != "sweep", reason="PLACERL_KILL_TRIALS=sweep only"
)
def test_kill_sweep(reference, tiny_model_dir):
    """Every rename and unlink and the file creations in the run directory, one trial each."""
    points = []
    for resume, calls in reference[3].items():
        for syscall, count, args in calls:
            in_run = str(reference[2]) in args
            # file creations of one checkpoint (step 1 and 3 make the same calls), the export,
            # config.yaml and the metrics files
            creates = syscall == "openat" and "O_CREAT" in args
            creates = creates and re.search(r"step_000002|policy|config|metrics|timeline", args)
            if syscall == "unlinkat" or (in_run and (creates or "rename" in syscall)):
                points.append((syscall == "openat", resume, syscall, count))
    results = {}
    only = os.environ.get("PLACERL_KILL_ONLY")  # e.g. "rename-6,resume-rename-2" to rerun
    for _, resume, syscall, count in sorted(points):  # renames and unlinks first
        name = f"{'resume-' if resume else ''}{syscall}-{count}"
        if only and name not in only.split(","):
            continue
        try:
            _trial(reference, tiny_model_dir, name, syscall, count, resume, "")
            results[name] = "ok"
        except AssertionError as err:
            results[name] = f"FAILED {str(err)[:300]}"
        print(f"kill trial {len(results)} {name}: {results[name]}", flush=True)
    print(f"kill sweep: {sum(v == 'ok' for v in results.values())}/{len(results)} passed")
    assert all(v == "ok" for v in results.values())
