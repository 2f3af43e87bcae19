"""kill -9 while a batch is in flight, then ``--resume``: the run ends bitwise equal to an
uninterrupted one, for the algorithms that joined the experience pipeline.

With ``max_staleness: 1`` the pipeline always holds one sampled batch ahead of training. The
reward kills the process (SIGKILL: no handler, no cleanup) while it scores the batch of step 3,
after the step-2 checkpoint was written and with sample 3 already drawn; the checkpoint holds
that drained batch (``pipeline.in_flight``). The resumed run must end with the same weights,
the same staleness tags and the same metrics rows as a run that was never stopped.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from placerl.checkpoint import latest_checkpoint, load_state
from tests import cli_runs
from tests.conftest import fast_overrides

pytestmark = pytest.mark.slow
STEPS = 4
REWARD = "reward.function=tests.runtime.killing_reward:killing_length_reward"
CASES = {
    "online_dpo": ("rollout.samples_per_prompt=2",),
    "rso": ("rso.num_candidates=4", "rso.num_accepted=2"),  # a frozen proposal
    "brain": ("brain.proposal=policy", "brain.num_samples=2"),
}


def _train(model_dir, run_dir, stage, *extra, kill_at=None):
    args = [*fast_overrides(model_dir, run_dir, stage, STEPS), REWARD, *CASES[stage]]
    args += ["placement.max_staleness=1", "data.num_eval=0", *extra]
    kill = {} if kill_at is None else {"PLACERL_KILL_AT_CALL": str(kill_at)}
    return cli_runs.train(stage, run_dir, args, **kill)


# rso samples its pairs like online_dpo, from a frozen proposal: a sweep case
@pytest.mark.parametrize(
    "stage", [pytest.param(s, marks=pytest.mark.sweep) if s == "rso" else s for s in sorted(CASES)]
)
def test_kill_with_a_batch_in_flight_then_resume_is_exact(tiny_model_dir, tmp_path, stage):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = _train(tiny_model_dir, straight, stage)
    assert done.returncode == 0, done.stderr[-3000:]
    # calls 1-2 score steps 1-2 (each saved); call 3 scores step 3's batch, sampled at step 2
    dead = _train(tiny_model_dir, killed, stage, kill_at=3)
    assert dead.returncode in (-9, 137), f"not killed: {dead.stderr[-3000:]}"
    saved = load_state(latest_checkpoint(killed / "checkpoints"))["stage"]["pipeline"]
    assert saved["version"] == 2 and saved["in_flight"]["index"] == 2, "a batch in flight"
    resumed = _train(tiny_model_dir, killed, stage, "--resume")
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
    assert [r["pipeline/staleness"] for r in rows_b] == [r["pipeline/staleness"] for r in rows_a]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if not key.startswith(("time/", "throughput/tokens_per_s")):
                assert rb[key] == value, f"step {ra['step']}: {key}"
