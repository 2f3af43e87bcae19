"""A supervised starting policy for the RL benchmarks: the base model after placerl SFT.

RL is run on an SFT'd model in practice, and that is the regime where what a GRPO trainer
skips matters: short responses that end at EOS, and groups whose samples all score the same
(all right or all wrong: advantage 0, no gradient). A random-init model instead writes to the
token budget and, with an exact-match reward, never scores. The SFT run is placerl's own
``stage: sft`` on the built-in task's demonstrations (the demo's recipe, noisy on purpose), so
the policy is mediocre: the 33.8M Llama reaches ~0.48 greedy accuracy on reversal after 200
steps of 32 examples. It is built once per work directory and reused.
"""

from __future__ import annotations

from pathlib import Path

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.trainer import train


def sft_policy(
    base: Path, work: Path, task: str, steps: int, *, lr: float = 7e-4, seed: int = 0
) -> Path:
    """The SFT'd policy directory under ``work`` (trained now unless already there)."""
    run_dir = work / f"sft-{task}-{steps}"
    policy = run_dir / "policy"
    if (policy / "config.json").exists():
        return policy
    overrides = [
        "stage=sft",
        f"run_dir={run_dir}",
        f"seed={seed}",
        f"model.path={base}",
        "data.train=builtin",
        "data.eval=builtin",
        f"data.builtin_task={task}",
        "data.max_len=32",
        f"optim.lr={lr}",
        "optim.warmup_steps=20",
        "optim.schedule=cosine",
        f"trainer.steps={steps}",
        "trainer.batch_size=32",
        f"trainer.eval_every={steps}",
        f"trainer.save_every={steps}",
        "trainer.progress=false",
        "trainer.report_to=[]",
        "rollout.max_new_tokens=8",
    ]
    train(load_config(None, overrides, RunConfig))
    return policy
