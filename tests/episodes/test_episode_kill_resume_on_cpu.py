"""kill -9 in the middle of a batch of episodes (an environment step kills the process), then
``--resume``: the run ends bitwise equal to one never stopped — weights, staleness tags and
metrics rows (tests/runtime/test_kill_in_flight_on_cpu.py does the same for single responses).
Episodes finish inside one sampling call, so what a checkpoint holds in flight is a finished
batch; the episodes' noise comes from the rollout's generator, saved with it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.checkpoint import latest_checkpoint, load_state
from tests import cli_runs
from tests.conftest import fast_overrides

pytestmark = pytest.mark.slow
STEPS = 4
EPISODES = [
    "env.factory=tests.episodes.envs:killing_echo_env",
    "env.max_tokens=40",
    "rollout.max_new_tokens=6",
    'rollout.stop_strings=["E","e","i","a","o","-","s","t","n"]',
    "rollout.samples_per_prompt=2",
    "data.num_eval=0",
]


def _train(model_dir, run_dir, stage, *extra, kill_at=None):
    args = [*fast_overrides(model_dir, run_dir, stage, STEPS), *EPISODES, *extra]
    kill = {} if kill_at is None else {"PLACERL_KILL_AFTER_RESETS": str(kill_at)}
    return cli_runs.train(stage, run_dir, args, **kill)


@pytest.mark.parametrize(
    ("stage", "staleness"),
    [pytest.param("grpo", 0, marks=pytest.mark.sweep), ("grpo", 1), ("ppo", 1)],
    ids=str,
)
def test_kill_mid_episode_then_resume_is_exact(tiny_model_dir, tmp_path, stage, staleness):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    stale = f"placement.max_staleness={staleness}"
    done = _train(tiny_model_dir, straight, stage, stale)
    assert done.returncode == 0, done.stderr[-3000:]
    # killed in the third batch of 8 episodes (4 prompts x 2 samples): after the step-2
    # checkpoint at staleness 0; at staleness 1 after step 1's, with the second batch in flight
    dead = _train(tiny_model_dir, killed, stage, stale, kill_at=2 * 8)
    assert dead.returncode in (-9, 137), f"not killed: {dead.stderr[-3000:]}"
    saved = load_state(latest_checkpoint(killed / "checkpoints"))["stage"]["pipeline"]
    assert 1 <= saved["version"] < STEPS
    if staleness:
        assert saved["in_flight"] is not None, "a batch of episodes in flight"
    resumed = _train(tiny_model_dir, killed, stage, stale, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = (
        load_file(straight / "policy" / "model.safetensors"),
        load_file(killed / "policy" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill -9 and resume"
    rows_a, rows_b = cli_runs.metric_rows(straight), cli_runs.metric_rows(killed)
    assert [r["step"] for r in rows_b] == list(range(1, STEPS + 1))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if not key.startswith(("time/", "throughput/tokens_per_s", "env/step_s", "env/tool_")):
                assert rb[key] == value, f"step {ra['step']}: {key}"
