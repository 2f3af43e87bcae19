"""Where a stage's models and data come from: the user's local paths or the built-in task."""

from __future__ import annotations

from pathlib import Path

from placerl.config.preflight import check_generation_fits
from placerl.config.schema import BUILTIN, RunConfig
from placerl.data.formats import (
    load_preference_dataset,
    load_prompt_dataset,
    load_sft_dataset,
    preference_rows,
    prompt_as_given,
    prompt_extras,
    prompt_rows,
    sft_rows,
)
from placerl.data.stream import IndexStream, PromptSet
from placerl.models.factory import make_model_dir
from placerl.models.loading import LoadOptions, load_policy, load_tokenizer
from placerl.models.lora import with_lora
from placerl.tasks.addition import AdditionTask
from placerl.tasks.reversal import ReversalTask


def builtin_task(cfg: RunConfig, split: str = "train") -> AdditionTask | ReversalTask:
    if cfg.data.builtin_task == "addition":
        return AdditionTask(carry_noise=cfg.data.builtin_noise, split=split)
    return ReversalTask(noise=cfg.data.builtin_noise, split=split)


def builtin_corpus() -> list[str]:
    """Text the built-in tokenizer is trained on: both built-in tasks."""
    rows = AdditionTask(carry_noise=0.0).sft_rows(1000, seed=12345)
    rows += ReversalTask(noise=0.0).sft_rows(1000, seed=12345)
    return [r["prompt"] + r["completion"] for r in rows]


def model_path(cfg: RunConfig) -> Path:
    """The policy's directory; with ``model.path: null`` a fresh tiny model is built first."""
    if cfg.model.path is not None:
        return Path(cfg.model.path)
    path = Path(cfg.run_dir) / "base_model"
    if not (path / "config.json").exists():
        make_model_dir(path, builtin_corpus(), seed=cfg.seed)
    return path


def tokenizer_and_policy(cfg: RunConfig):
    path = model_path(cfg)
    options = LoadOptions.of(cfg.model)
    tokenizer = load_tokenizer(cfg.model.tokenizer or path, options)
    return tokenizer, with_lora(load_policy(path, options), cfg.model.lora)


def sft_pairs(cfg: RunConfig, tokenizer, path: str, split: str = "train") -> list[tuple[str, str]]:
    if path == BUILTIN:
        rows = builtin_task(cfg, split).sft_rows(cfg.data.builtin_size, seed=cfg.seed)
        return [(r["prompt"], r["completion"]) for r in rows]
    return sft_rows(load_sft_dataset(path), tokenizer, source=path)


def preference_triples(
    cfg: RunConfig, tokenizer, path: str, split: str = "train", n: int | None = None
):
    if path == BUILTIN:
        task = builtin_task(cfg, split)
        rows = task.preference_rows(
            n or cfg.data.builtin_size, seed=cfg.seed + (0 if split == "train" else 1)
        )
        return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    return preference_rows(load_preference_dataset(path), tokenizer, source=path)


def eval_source(cfg: RunConfig) -> str | None:
    """The held-out data: ``data.eval``, else the built-in eval split for built-in training
    data, else none (a user's training file is never silently reused as held-out data)."""
    if cfg.data.num_eval == 0:
        return None
    return cfg.data.eval or (BUILTIN if cfg.data.train == BUILTIN else None)


def prompt_set(cfg: RunConfig, tokenizer, path: str | None, split: str) -> PromptSet:
    """Prompts of the train file, the eval file, or the built-in task's split."""
    if path in (None, BUILTIN):
        n = cfg.data.builtin_size if split == "train" else cfg.data.num_eval
        rows = builtin_task(cfg, split).prompt_rows(
            n, seed=cfg.seed + (0 if split == "train" else 7)
        )
        source = f"builtin:{split}"
    else:
        rows = list(load_prompt_dataset(path))
        if split == "eval":
            rows = rows[: cfg.data.num_eval]
        source = path
    texts = prompt_rows(rows, tokenizer, source=source)
    given = [prompt_as_given(r) for r in rows]
    extras = [prompt_extras(r) for r in rows]
    columns = {k: [e[k] for e in extras] for k in (extras[0] if extras else {})}
    prompts = PromptSet.build(texts, columns, tokenizer, cfg.data.max_prompt_len, source, given)
    budget, key = cfg.rollout.max_new_tokens, "rollout.max_new_tokens"
    if cfg.env.enabled:  # every token of an episode after its first prompt
        budget, key = cfg.env.max_tokens, "env.max_tokens"
    check_generation_fits(prompts.token_ids, budget, model_path(cfg), source, key)
    return prompts


def prompt_data(cfg: RunConfig, tokenizer) -> tuple[PromptSet, PromptSet | None, IndexStream]:
    """What every online stage samples from: training prompts, held-out prompts (or None),
    and the seeded, resumable order in which training prompts are drawn."""
    prompts = prompt_set(cfg, tokenizer, cfg.data.train, "train")
    eval_path = eval_source(cfg)
    eval_prompts = prompt_set(cfg, tokenizer, eval_path, "eval") if eval_path else None
    return prompts, eval_prompts, IndexStream(len(prompts), cfg.trainer.batch_size, seed=cfg.seed)
