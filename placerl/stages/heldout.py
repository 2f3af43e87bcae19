"""The held-out data of the offline stages, read from ``data.eval`` in the training format.

- SFT: a file of SFT rows (``prompt``+``completion`` or ``messages``) gives ``eval/loss``;
  its prompts (the first ``trainer.log_samples`` that fit ``data.max_prompt_len``) are
  answered greedily as samples, next to the reference completion. An ``answer`` column adds
  exact-match accuracy over every row. A prompt file with ``answer`` (what SFT took before)
  still gives accuracy alone. With built-in data: the task's eval split, both.
- DPO/RM: a preference file (pairs are read by ``sources.preference_triples``); here only the
  prompts to sample from, with the chosen and rejected responses as references.

Every row is checked like training data: a bad row is a ``UserError`` naming file and row.
"""

from __future__ import annotations

from dataclasses import dataclass

from placerl.config.schema import BUILTIN, RunConfig
from placerl.data.formats import prompt_extras, sft_rows
from placerl.data.loading import load_records
from placerl.data.stream import PromptSet
from placerl.errors import UserError
from placerl.stages.sources import builtin_task, eval_source, prompt_set

SFT_COLUMNS = ("completion", "messages")


@dataclass
class SFTHeldOut:
    pairs: list[tuple[str, str]]  # (prompt, completion) text: eval/loss; may be empty
    prompts: PromptSet | None  # generated: accuracy when it has `answer`, else samples only


def sft_held_out(cfg: RunConfig, tokenizer) -> SFTHeldOut | None:
    """SFT's held-out data (see the module docstring), or None without ``data.eval``."""
    path = eval_source(cfg)
    if path is None:
        return None
    n = cfg.data.num_eval
    if path == BUILTIN:
        rows = builtin_task(cfg, "eval").sft_rows(n, seed=cfg.seed + 7)
        pairs = [(r["prompt"], r["completion"]) for r in rows]
        return SFTHeldOut(pairs, prompt_set(cfg, tokenizer, BUILTIN, "eval"))
    records = load_records(path, (), "eval dataset")
    if not any(c in records.column_names for c in SFT_COLUMNS):
        return SFTHeldOut([], prompt_set(cfg, tokenizer, path, "eval"))  # prompts + answers
    rows = list(records.select(range(min(n, len(records)))))
    pairs = sft_rows(rows, tokenizer, source=path)
    columns = {"completion": [c for _, c in pairs]}
    extras = [prompt_extras(r) for r in rows]
    if "answer" in records.column_names:
        columns["answer"] = [e["answer"] for e in extras]
        prompts = PromptSet.build(
            [p for p, _ in pairs], columns, tokenizer, cfg.data.max_prompt_len, path
        )
    else:
        prompts = fitting_prompts(
            cfg, tokenizer, [p for p, _ in pairs], columns, cfg.trainer.log_samples, path
        )
    return SFTHeldOut(pairs, prompts)


def preference_prompts(
    cfg: RunConfig, tokenizer, triples: list[tuple[str, str, str]]
) -> PromptSet | None:
    """The first ``trainer.log_samples`` held-out pairs' prompts that fit, to sample from."""
    if not triples or cfg.trainer.log_samples == 0:
        return None
    columns = {"chosen": [t[1] for t in triples], "rejected": [t[2] for t in triples]}
    prompts = [t[0] for t in triples]
    source = str(eval_source(cfg))
    return fitting_prompts(cfg, tokenizer, prompts, columns, cfg.trainer.log_samples, source)


def fitting_prompts(
    cfg: RunConfig, tokenizer, texts: list[str], columns: dict[str, list], n: int, source: str
) -> PromptSet:
    """Up to ``n`` of ``texts`` (in order) whose tokens fit ``data.max_prompt_len``: samples
    are for reading, so a long prompt is skipped rather than refused."""
    kept: list[int] = []
    for index, text in enumerate(texts):
        if len(kept) == n:
            break
        try:
            PromptSet.build([text], {}, tokenizer, cfg.data.max_prompt_len, source)
        except UserError:
            continue
        kept.append(index)
    return PromptSet.build(
        [texts[i] for i in kept],
        {k: [v[i] for i in kept] for k, v in columns.items()},
        tokenizer,
        cfg.data.max_prompt_len,
        source,
    )
