"""The planner benchmark's workloads: the tuned grid, a held-out set drawn from a seed, and how
one cell (a workload under one placement) is built and timed.

The **tuned** grid is the 12 workloads the cost model's constants were fitted and refined on
(two model sizes, PPO and GRPO, 8/32 new tokens, 8/32 rows). The **held-out** set is drawn
by ``held_out(seed, count)`` and never looked at while tuning: a Llama shape of 3-40M
parameters (log-uniform: a width of 128-512, MLP 2.5-4x, 64-wide heads, KV heads half of them,
and as many blocks, 2-16, as reach the drawn size; the built-in 512-token BPE, so the
vocabulary is not varied), the algorithms in turn — PPO
(with a reward model), GRPO, RLOO, online DPO (rule rewards) — 8-128 new tokens (log-uniform),
8/16/32 rows a step, ``max_staleness`` 0 for the first four, 1 for the next four, and so on.
The **offline** set (``offline_held_out``, its own stream of the same seed) draws SFT and
DPO workloads in turn: a shape as above, 16-96 completion tokens after a 16-token prompt (a
generated file of digit strings), 8/16/32 examples a step, under local and Flatten. A draw whose step would take more than ``WORK_CAP`` token-parameters (rows x
tokens x parameters: a few seconds a step here) is drawn again, so the whole set runs in
minutes; the rule is the generator's, not a hand's.

A cell runs the stage through ``placerl.trainer.train`` for its warm-up and measured steps,
reading ``time/step`` back from ``metrics.jsonl`` (Ray's start-up and model loading left out
and timed apart). Strategies: ``local`` (every role in this process, every core), and on two
1-thread workers ``flatten``, ``separate`` (``max_staleness`` of the workload) and, with two
frozen models (PPO: reference and reward model), ``interleave``. Stale workloads run the plans
that overlap stale batches (local with its shadow copy, Separate).

The **episodes** set (issue 24) is GRPO over 3-turn episodes of ``Sleepy``, an environment
whose tool sleeps (0 or 1 s) before answering: turns end at a vowel (``STOPS``), so a random
policy's episodes go on; the planner is told their shape in ``env.expect``.
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

import placerl.trainer as trainer
from placerl.config.schema import RunConfig
from placerl.logging import read_metrics
from placerl.models.factory import TinyLlamaSize

WORK_CAP = 2.5e10  # rows x (prompt + new tokens) x parameters of one step, at most
PROMPT_TOKENS = 16  # about the built-in task's prompts
TWO_WORKERS = {"device": "cpu", "num_workers": 2, "threads_per_worker": 1}
SIZES = {
    "6M": TinyLlamaSize(),  # the demo's policy
    "1.6M": replace(TinyLlamaSize(), hidden_size=128, intermediate_size=512, num_hidden_layers=4),
}


@dataclass(frozen=True)
class Spec:
    """One workload: a model, an algorithm, its lengths, rows and staleness."""

    size: str  # a name in ``sizes``
    algo: str  # ppo | grpo | rloo | online_dpo
    tokens: int  # new tokens a response (an untrained policy runs to the cap)
    rows: int  # prompts x samples a step
    staleness: int = 0
    dims: TinyLlamaSize | None = None  # the held-out shapes; the tuned ones are ``SIZES``
    turns: int = 0  # multi-turn episodes of this many turns (``Sleepy``); 0: one response
    tool_ms: int = 0  # the episodes' tool wait, milliseconds (one of ``TOOL_MS``)

    @property
    def name(self) -> str:
        stale = " stale1" if self.staleness else ""
        episodes = f" {self.turns}turns tool{self.tool_ms}ms" if self.turns else ""
        return f"{self.algo} {self.size} {self.rows}x{self.tokens}{episodes}{stale}"

    @property
    def samples(self) -> int:
        return 1 if self.algo == "ppo" else 4

    @property
    def strategies(self) -> list[str]:
        if self.algo in OFFLINE_ALGOS:  # one trained model: in this process, or data-parallel
            return ["local", "flatten"]
        if self.staleness:
            return ["local", "separate"]
        out = ["local", "flatten", "separate"]
        if self.algo == "ppo":  # reference and reward model: two frozen models to split
            out.append("interleave")
        return out


TUNED = [
    Spec(size, algo, tokens, 32) for size in SIZES for algo in ("ppo", "grpo") for tokens in (8, 32)
] + [
    Spec("6M", "ppo", 8, 8),
    Spec("6M", "grpo", 32, 8),
    Spec("1.6M", "ppo", 32, 8),
    Spec("1.6M", "grpo", 8, 8),
]


class Sleepy:
    """A multi-turn environment whose tool sleeps: every turn but the last gets a short tool
    observation after ``seconds`` of waiting (a service, a sandbox), the last is rewarded by
    its length (signal for a random model) and ends the episode at ``env.max_turns``."""

    tool_schemas = ()

    def __init__(self, max_turns: int, seconds: float):
        self.max_turns, self.seconds, self.turns = max_turns, seconds, 0

    def reset(self, row):
        from placerl.rollout.envs import prompt_messages

        self.turns = 0
        return prompt_messages(row)

    def step(self, assistant):
        from placerl.rollout.envs import StepResult

        self.turns += 1
        if self.turns >= self.max_turns:
            return StepResult(reward=float(len(assistant["content"])), done=True)
        time.sleep(self.seconds)
        seen = {"role": "tool", "name": "count", "content": str(len(assistant["content"]))}
        return StepResult(observation=(seen,))


def sleepy_factory(ms: int):
    def factory(limits):
        return Sleepy(limits.max_turns, ms / 1000)

    return factory


TOOL_MS = (0, 1000)  # the sleeping tools the episode workloads use: env.factory by name
for _ms in TOOL_MS:
    globals()[f"sleepy_{_ms}ms"] = sleepy_factory(_ms)
# every turn ends at one of these (a random policy rarely samples its end token), so episodes
# go on for env.max_turns turns instead of ending at a truncated first one
STOPS = ["e", "a", "o", "i"]


def text_length_reward(completions: list[str], **_) -> list[float]:
    """Characters of each completion: an untrained policy's samples of one prompt differ, so
    online DPO has pairs to train on (the task's rule reward ties them all at 0)."""
    return [float(len(c)) for c in completions]


def params_of(d: TinyLlamaSize, vocab: int = 512) -> int:
    kv = d.num_key_value_heads * (d.hidden_size // d.num_attention_heads)
    h, f = d.hidden_size, d.intermediate_size
    block = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    return 2 * vocab * h + d.num_hidden_layers * block + h


ALGOS = ("ppo", "grpo", "rloo", "online_dpo")
# multi-turn workloads (issue 24): GRPO episodes of 3 turns on the demo's policy with an
# instant and a 1 s tool, synchronous; and the slow tool with one stale batch, where Separate
# samples (and waits on tools) while the update runs
EPISODES = [
    Spec("6M", "grpo", 12, 16, 0, turns=3, tool_ms=0),
    Spec("6M", "grpo", 12, 16, 0, turns=3, tool_ms=1000),
    Spec("6M", "grpo", 12, 16, 1, turns=3, tool_ms=1000),
]


def draw_shape(rng: random.Random) -> tuple[TinyLlamaSize, int]:
    """A Llama shape of 3-40M parameters (log-uniform; the module's rules) and its size."""
    target = math.exp(rng.uniform(math.log(3e6), math.log(40e6)))  # log-uniform size
    hidden = rng.choice([128, 192, 256, 320, 384, 448, 512])
    heads = max(2, hidden // 64)
    dims = TinyLlamaSize(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=heads,
        # half of them where that divides them (grouped-query attention needs a divisor)
        num_key_value_heads=max(d for d in range(1, heads // 2 + 1) if heads % d == 0),
        intermediate_size=round(hidden * rng.uniform(2.5, 4.0) / 32) * 32,
    )
    block = params_of(dims) - params_of(replace(dims, num_hidden_layers=0))
    layers = max(
        2, min(16, round((target - params_of(replace(dims, num_hidden_layers=0))) / block))
    )
    dims = replace(dims, num_hidden_layers=layers)
    return dims, params_of(dims)


def held_out(seed: int = 19, count: int = 12) -> list[Spec]:
    """``count`` workloads drawn from ``seed`` (the module's rules): the algorithms in turn,
    staleness 0 for the first four and 1 for the next, the rest drawn."""
    rng = random.Random(seed)
    out: list[Spec] = []
    while len(out) < count:
        dims, params = draw_shape(rng)
        algo = ALGOS[len(out) % len(ALGOS)]  # each equally often, in the drawn order
        tokens = round(math.exp(rng.uniform(math.log(8), math.log(128))))
        rows = rng.choice([8, 16, 32])
        staleness = (len(out) // len(ALGOS)) % 2  # each algorithm at staleness 0 and 1
        if not 3e6 <= params <= 40e6 or rows * (PROMPT_TOKENS + tokens) * params > WORK_CAP:
            continue
        out.append(Spec(f"{params / 1e6:.1f}M", algo, tokens, rows, staleness, dims))
    return out


OFFLINE_ALGOS = ("sft", "dpo")
OFFLINE_SEED = 22  # the offline set's own stream: the RL set's draws stay as they were


def offline_held_out(seed: int = 19, count: int = 4) -> list[Spec]:
    """``count`` SFT and DPO workloads drawn from ``seed`` (in turn): a shape as
    ``held_out`` draws it, 16-96 completion tokens (log-uniform) after a 16-token prompt,
    8/16/32 examples a step; capped by ``WORK_CAP`` as the RL set (a pair counts twice)."""
    rng = random.Random(seed * 1000 + OFFLINE_SEED)
    out: list[Spec] = []
    while len(out) < count:
        dims, params = draw_shape(rng)
        algo = OFFLINE_ALGOS[len(out) % len(OFFLINE_ALGOS)]
        tokens = round(math.exp(rng.uniform(math.log(16), math.log(96))))
        rows = rng.choice([8, 16, 32])
        sequences = rows * (2 if algo == "dpo" else 1)
        if not 3e6 <= params <= 40e6 or sequences * (PROMPT_TOKENS + tokens) * params > WORK_CAP:
            continue
        out.append(Spec(f"{params / 1e6:.1f}M", algo, tokens, rows, 0, dims))
    return out


def offline_data(spec: Spec, where: Path, examples: int = 2048) -> Path:
    """A JSONL file of ``spec``'s examples: digit strings (one token a digit with the built-in
    tokenizer), a ``PROMPT_TOKENS``-digit prompt and a ``spec.tokens``-digit completion (DPO:
    chosen and rejected, two different strings); drawn from the spec's name."""
    import json

    path = where / f"{spec.algo}-{spec.tokens}.jsonl"
    if path.is_file():
        return path
    rng = random.Random(spec.name)
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for _ in range(examples):
            row = {"prompt": digits(PROMPT_TOKENS)}
            if spec.algo == "sft":
                row["completion"] = digits(spec.tokens)
            else:
                row["chosen"], row["rejected"] = digits(spec.tokens), digits(spec.tokens)
            f.write(json.dumps(row) + "\n")
    return path


def offline_config(spec: Spec, strategy: str, base: Path, run_dir: Path, steps: int):
    """The SFT or DPO stage of ``spec`` on ``base`` (its data beside it) under ``strategy``."""
    raw = {
        "stage": spec.algo,
        "seed": 0,
        "run_dir": str(run_dir),
        "model": {"path": str(base)},
        "data": {
            "train": str(offline_data(spec, base.parent / "data")),
            "max_len": PROMPT_TOKENS + spec.tokens + 8,
            "num_eval": 0,
        },
        "optim": {"lr": 2e-5},
        "trainer": {"steps": steps, "batch_size": spec.rows, "eval_every": 0, "save_every": 0}
        | {"progress": False, "report_to": [], "keep_checkpoints": 1},
    }
    placement = {"strategy": "local", "device": "cpu"}
    if strategy != "local":
        placement = {"strategy": strategy, **TWO_WORKERS}
    raw["placement"] = placement
    return RunConfig.model_validate(raw)


def dims_of(spec: Spec) -> TinyLlamaSize:
    return spec.dims or SIZES[spec.size]


def env_section(spec: Spec, expect: dict | None = None) -> dict:
    """The ``env:`` of an episode workload: ``Sleepy`` for ``spec.turns`` turns; ``expect``
    is what the planner is told of the episodes (``env.expect``)."""
    return {
        "factory": f"planner_workloads:sleepy_{spec.tool_ms}ms",
        "max_turns": spec.turns,
        "max_tokens": spec.turns * (spec.tokens + 32),
        "expect": expect or {"tool_s": spec.tool_ms / 1000},
    }


def episode_expectation(metrics: list[dict], spec: Spec) -> dict:
    """``env.expect`` from a run's ``env/*`` metrics (what a user reads off an earlier run):
    mean turns, model tokens per turn, observation tokens, the environment step's seconds;
    the slowest episode and turn stay at their bounds (``env.max_turns``, max_new_tokens)."""
    mean = {k: statistics.mean(m[k] for m in metrics) for k in metrics[0] if k.startswith("env/")}
    turns = mean["env/turns"]
    return {
        "turns": turns,
        "turn_tokens": mean["env/tokens_model"] / turns,
        "observation_tokens": mean["env/tokens_observation"] / max(turns - 1, 1e-9),
        "tool_s": spec.tool_ms / 1000,
    }


def rl_config(
    spec: Spec,
    strategy: str,
    base: Path,
    rm: Path,
    run_dir: Path,
    steps: int,
    expect: dict | None = None,
):
    """The stage of ``spec`` on ``base`` under ``strategy`` for ``steps`` steps."""
    if spec.algo in OFFLINE_ALGOS:
        return offline_config(spec, strategy, base, run_dir, steps)
    prompts = max(1, spec.rows // spec.samples)
    raw = {
        "stage": spec.algo,
        "seed": 0,
        "run_dir": str(run_dir),
        "model": {"path": str(base)},
        "data": {"builtin_size": 4096, "num_eval": 0},
        "optim": {"lr": 2e-5},
        "rollout": {"max_new_tokens": spec.tokens, "samples_per_prompt": spec.samples},
        "trainer": {"steps": steps, "batch_size": prompts, "eval_every": 0, "save_every": 0}
        | {"progress": False, "report_to": [], "keep_checkpoints": 1},
    }
    if spec.algo == "ppo":
        raw["reward"] = {"model": str(rm)}
        raw["ppo"] = {"kl_coef": 0.05, "epochs": 1, "minibatches": 2}
    elif spec.algo in ("grpo", "rloo"):  # the untrained policy earns no reward: keep its groups
        raw["grpo"] = {"skip_uninformative": False}
    else:  # online DPO: the rule reward ties on an untrained policy, and ties train nothing
        raw["reward"] = {"function": "planner_workloads:text_length_reward"}
    if spec.turns:
        raw["env"] = env_section(spec, expect)
        raw["rollout"]["stop_strings"] = STOPS
    placement = {"strategy": "local", "device": "cpu"}
    if strategy not in ("local", "auto"):
        placement = {"strategy": strategy, **TWO_WORKERS}
    elif strategy == "auto":
        placement = {"strategy": "auto", **TWO_WORKERS}
    raw["placement"] = placement | {"max_staleness": spec.staleness}
    return RunConfig.model_validate(raw)


@dataclass
class Cell:
    """One workload under one strategy: its measured steps over all rounds."""

    spec: Spec
    strategy: str
    steps: list[float] = field(default_factory=list)
    round_steps: list[float] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    lines: list[dict] = field(default_factory=list)  # the measured steps' metrics rows

    @property
    def step(self) -> float:
        return statistics.median(self.steps)


def timed_train(cfg: RunConfig, profiler=None) -> list[float]:
    """Train ``cfg`` from scratch; the seconds each stage build took (workers, models)."""
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    # the driver as a user's process has it: every core for a run in this process (local, or
    # auto's pick of it); a worker plan's driver only calls its workers, which set their own
    in_process = cfg.placement.strategy in ("local", "auto")
    torch.set_num_threads(2 if in_process else 1)
    startup: list[float] = []
    build = trainer.build_stage

    def timed_build(config):
        start = time.perf_counter()
        stage = build(config)
        startup.append(time.perf_counter() - start)
        return stage

    trainer.build_stage = timed_build
    try:
        trainer.train(cfg, profiler=profiler)
    finally:
        trainer.build_stage = build
    return startup


def run_cell(cell: Cell, base: Path, rm: Path, work: Path, warmup: int, steps: int, round_: int):
    """One run of ``cell``: its measured steps (after ``warmup``) go into it."""
    run_dir = work / f"{cell.spec.name.replace(' ', '_')}-{cell.strategy}-{round_}"
    cfg = rl_config(cell.spec, cell.strategy, base, rm, run_dir, warmup + steps)
    cell.startup += timed_train(cfg)
    lines = [m for m in read_metrics(run_dir) if m.get("step", 0) > warmup]
    cell.steps += [m["time/step"] for m in lines]
    cell.lines += lines
    cell.round_steps.append(statistics.median(m["time/step"] for m in lines))
    for key in {k for m in lines for k in m if k.startswith("time/") and k != "time/step"}:
        cell.phases.setdefault(key[5:], []).extend(m[key] for m in lines if key in m)
    drop_outputs(run_dir)


def drop_outputs(run_dir: Path) -> None:
    """A measured run's checkpoints and exported models, once its metrics are read: a held-out
    pass wrote 7.7 GB of them (a 15.7M PPO cell, 470 MB) and filled the disk."""
    for name in ("checkpoints", "policy", "critic", "reward_model"):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)
