"""The policy family over whole episodes (issue 24 item 3): online DPO pairs a prompt's
episodes by the environment's reward, DAPO's dynamic sampling samples further batches of
episodes for groups with signal, GSPO's sequence ratio spans every model turn. The path is
GRPO's (``rollout.sample``); these runs show each algorithm finishing with episode metrics and
a gradient, on the echo environment (tests/episodes/envs.py)."""

from __future__ import annotations

import math

import pytest

from tests.episodes.test_episode_runs_on_cpu import ECHO, train

pytestmark = pytest.mark.slow
CASES = {  # name: (stage, overrides, keys every step logs)
    "online_dpo": ("online_dpo", ["rollout.samples_per_prompt=4"], ["loss/preference"]),
    "dapo": (
        "dapo",
        ["rollout.samples_per_prompt=2", "dapo.dynamic_sampling.max_rounds=2"],
        ["loss/policy", "dynamic_sampling/rounds", "dynamic_sampling/filtered_share"],
    ),
    "gspo": ("grpo", ["grpo.policy_loss=gspo"], ["loss/policy"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_policy_family_trains_on_episodes(tiny_model_dir, tmp_path, case):
    stage, overrides, keys = CASES[case]
    rows, samples = train(tiny_model_dir, tmp_path, stage, ECHO, *overrides)
    assert len(rows) == 2
    for row in rows:
        assert row["env/turns"] > 1 and row["env/tokens_observation"] > 0
        assert row["env/rewarded"] > 0
        for key in keys:
            assert math.isfinite(row[key]), key
    assert any(row.get("actor/grad_norm", 0) > 0 for row in rows), "the policy learned"
    assert samples and samples[0]["conversation"]["messages"][1]["role"] == "assistant"
    if case == "dapo":
        assert all(1 <= row["dynamic_sampling/rounds"] <= 2 for row in rows)
