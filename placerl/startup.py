"""What a run is about to do, said once at its start: the startup summary.

A new user's first question after ``placerl train`` is "did it understand me?": which model
(its shape, how many parameters train — LoRA trains few), on which device and precision, how
much data and how many steps cover it, how many prompts and samples a step takes, where each
role runs, which reward, whether it resumed and from where, and where the outputs go. One
block of plain lines (``trainer._run_stage`` prints it above the progress bar), built from the
config and the stage the trainer has just built — nothing here loads or measures anything.

Only the online stage has sampled prompts; the offline stages have a Plan when they train on
Ray workers (``placement.strategy: flatten``, or auto's pick of it). Length percentiles come
from the token ids the stage already holds (every row is tokenized once at start), so they
cost no tokenizing here: the prompts' for every stage, and for sft, rm and dpo also the whole
row's (prompt + completion, or prompt + the longer response) before any cut, with the share of
rows ``data.max_len`` cuts — what to set ``data.max_len`` / ``data.max_prompt_len`` from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from placerl.config.schema import BUILTIN, RunConfig
from placerl.data.collate import length_percentiles
from placerl.data.examples import SFTExample
from placerl.placement.plan.plan import Plan
from placerl.stages import Stage


@dataclass(frozen=True)
class Sampling:
    """What only a sampling (online) stage has: its runtime's Plan and its prompts."""

    plan: Plan
    samples_per_prompt: int
    prompt_lengths: Sequence[int]

    @classmethod
    def of(cls, stage: Stage) -> Sampling | None:
        from placerl.stages.online import OnlineStage

        if not isinstance(stage, OnlineStage):
            return None
        lengths = [len(ids) for ids in stage.prompts.token_ids]
        needs = stage.algorithm.needs
        return cls(stage.runtime.plan, needs.samples_per_prompt, lengths)


def startup_summary(
    cfg: RunConfig, stage: Stage, start: int, resumed_from: Path | None, threads: str = ""
) -> list[str]:
    """The summary's lines (module doc). ``start``: the step the run continues from;
    ``resumed_from``: the checkpoint it was restored from (None: a fresh start);
    ``threads``: how torch's threads were set (``runtime/threads.py``), when known."""
    from placerl.models.device import resolve_device

    device = resolve_device(cfg.placement.device)
    where = f"{device.type}, {cfg.model.precision}" + (f", {threads}" if threads else "")
    models, sampling = stage.trained_models(), Sampling.of(stage)
    lines = [f"placerl {cfg.stage}: {cfg.trainer.steps} steps on {where}"]
    lines += model_lines(cfg.model.path, models)
    lines += data_lines(cfg, stage.stream.size, sampling, offline_examples(stage))
    lines += placement_lines(sampling.plan if sampling else offline_plan(stage))
    if sampling is not None:
        lines.append(f"  reward: {reward_line(cfg)}")
    lines.append(f"  start: {resume_line(start, cfg.trainer.steps, resumed_from)}")
    lines.append(f"  outputs: {outputs_line(cfg, list(models))}")
    return lines


def model_lines(path: str | None, models: Mapping[str, nn.Module]) -> list[str]:
    """One line per trained model: its shape and its total and trainable parameters."""
    lines = [f"  model: {path or 'the built-in tiny Llama'}"]
    for name, model in models.items():
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        share = f" ({trainable / total:.2%})" if trainable < total else ""
        lines.append(
            f"    {name}: {model_shape(model)}; {count(total)} parameters, "
            f"{count(trainable)} trainable{share}"
        )
    return lines


def model_shape(model: nn.Module) -> str:
    """``llama, 4 layers, hidden 64, vocab 363`` from a Hugging Face config."""
    config = model.config
    parts = [
        str(config.model_type),
        f"{config.num_hidden_layers} layers",
        f"hidden {config.hidden_size}",
        f"vocab {config.vocab_size}",
    ]
    return ", ".join(parts)


def count(n: int) -> str:
    """``6.2M``, ``1.5B``, ``812``: parameter counts at a glance."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def data_lines(
    cfg: RunConfig, rows: int, sampling: Sampling | None, examples: Sequence = ()
) -> list[str]:
    """Rows, how many steps one pass over them takes, the batch in prompts and in samples,
    the length limits, and the spread of the rows' lengths (``examples``: an offline stage's
    encoded rows; a sampling stage's prompts come with ``sampling``)."""
    batch = cfg.trainer.batch_size
    per_pass = math.ceil(rows / batch)
    epochs = cfg.trainer.steps * batch / rows
    source = cfg.data.train if cfg.data.train != BUILTIN else f"built-in {cfg.data.builtin_task}"
    lines = [
        f"  data: {rows} rows of {source}; one pass is {per_pass} steps of {batch}, "
        f"{cfg.trainer.steps} steps are {epochs:.3g} passes"
    ]
    if sampling is None:
        lines.append(f"  batch: {batch} rows a step; data.max_len {cfg.data.max_len}")
        return lines + offline_length_lines(examples, cfg.data.max_len)
    samples = sampling.samples_per_prompt
    lines.append(
        f"  batch: {batch} prompts x {samples} samples = {batch * samples} responses a step; "
        f"max_new_tokens {cfg.rollout.max_new_tokens}, data.max_prompt_len "
        f"{cfg.data.max_prompt_len}"
    )
    lines.append(f"  prompt lengths: {length_percentiles(sampling.prompt_lengths)}")
    return lines


def offline_length_lines(examples: Sequence, max_len: int) -> list[str]:
    """Prompt and whole-row length percentiles of offline examples (``SFTExample`` or
    ``EncodedPair``: ``prompt``, ``full_length``, ``truncated``), and how many rows
    ``data.max_len`` cuts."""
    if not examples:
        return []
    whole = "prompt+completion" if isinstance(examples[0], SFTExample) else "prompt+response"
    cut = sum(1 for e in examples if e.truncated)
    share = f"{cut} of {len(examples)} rows ({cut / len(examples):.1%})" if cut else "no row"
    return [
        f"  prompt lengths: {length_percentiles([len(e.prompt) for e in examples])}",
        f"  {whole} lengths: {length_percentiles([e.full_length for e in examples])}; "
        f"{share} over data.max_len {max_len}" + (", cut to fit" if cut else ""),
    ]


def offline_examples(stage: Stage) -> Sequence:
    """An offline stage's encoded rows (empty for a sampling stage)."""
    from placerl.stages.offline import OfflineStage

    return stage.examples if isinstance(stage, OfflineStage) else ()


def offline_plan(stage: Stage) -> Plan | None:
    """The Plan of an offline stage's Ray workers (None: it trains in this process)."""
    from placerl.stages.offline import OfflineStage

    return stage.runtime.plan if isinstance(stage, OfflineStage) else None


def placement_lines(plan: Plan | None) -> list[str]:
    """Where each role runs: the Plan, one line per device group (sampling stages)."""
    if plan is None:
        return ["  placement: every model in this process"]
    staleness = "on-policy" if plan.max_staleness == 0 else f"staleness {plan.max_staleness}"
    samples = any(role.value == "rollout" for role in plan.roles)  # offline stages: no rollout
    lines = [f"  placement: {plan.strategy}" + (f" ({staleness})" if samples else "")]
    return lines + [f"    {line}" for line in plan_lines(plan)]


def plan_lines(plan: Plan) -> list[str]:
    """``g0 (cpu0-1): actor x2 fsdp, rollout x2, reference`` for each group."""
    from placerl.placement.plan.render import sharding_label, slot_span

    lines = []
    for group in plan.groups:
        roles = []
        for role, placement in plan.roles.items():
            if group.name in placement.groups:
                shards = sharding_label(placement)
                width = f" x{placement.dp_size}" if placement.dp_size > 1 else ""
                roles.append(role.value + width + ("" if shards == "none" else f" {shards}"))
        lines.append(f"{group.name} ({slot_span(group.slots)}): {', '.join(roles) or '-'}")
    return lines


def reward_line(cfg: RunConfig) -> str:
    reward = cfg.reward
    if reward.model:
        what = f"model {reward.model}"
    elif reward.function:
        what = f"function {reward.function}"
    else:
        what = "the built-in exact-match reward"
    return what + (f", scaled by {reward.scale:g}" if reward.scale != 1.0 else "")


def resume_line(start: int, total: int, resumed_from: Path | None) -> str:
    if resumed_from is None:
        return "fresh, from step 0"
    return f"resumed from {resumed_from} (step {start} of {total})"


def outputs_line(cfg: RunConfig, models: Sequence[str]) -> str:
    """The run directory and what lands in it."""
    tc = cfg.trainer
    saves = (
        f"checkpoints/ every {tc.save_every} steps" if tc.save_every else "checkpoints/ at the end"
    )
    trackers = ", ".join(tc.report_to) or "no trackers"
    exported = ", ".join(f"{name}/" for name in models)
    return f"{cfg.run_dir}: metrics.jsonl ({trackers}), {saves}, {exported} at the end"
