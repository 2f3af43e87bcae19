"""How an offline step (sft, rm, dpo) reads in the cost model's terms: an update, and no rollout.

The offline stages train one model on fixed examples (``stages/offline.py``): a step is the
trained model's forward/backward over the batch and the optimizer step, data-parallel over the
Plan's slots, plus (dpo) the frozen reference's forward over the pairs it has not scored yet.
In the ``Workload``'s terms:

- **sft**: ``batch_size`` rows of ``[prompt | completion]``, the LM head on completion tokens
  (``algos/sft.py``): ``prompts = rows = batch_size``, one sample each;
- **rm**: a value-head model over both sides of every pair, each ``[prompt | response]`` its
  own row (``data/examples.pair_rows``): ``2 · batch_size`` rows, each with its prompt;
- **dpo** (and SLiC, IPO: the same passes, another loss): the policy over
  ``[prompt | chosen | rejected]``, the prompt computed once (``algos/dpo.py``'s shared
  layout): ``batch_size`` prompts × 2 responses, and the reference over the same rows. With
  ``preference.reference: cached`` the reference scores an example once: its forward runs on
  the steps of the first epoch only, a share ``min(1, examples / (steps · batch_size))`` of
  them on average (``reference_share``).

A preference pair is never split across micro-batches (``unit_rows`` 2): a micro-batch of the
search is a multiple of 2 rows, as ``trainer.micro_batch_size`` counts a pair as 2.

The lengths are the means of the first examples of ``data.train`` (or the built-in task's)
under the model's tokenizer, encoded as the stage encodes them and cut to ``data.max_len``; a
quarter of ``data.max_len`` each for prompt and response when they cannot be read. They are
mean lengths: padding to a micro-batch's longest row is not counted (SFT packs without padding
where the model allows it, ``data.packing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OFFLINE_STAGES = ("sft", "rm", "dpo")
PAIRED = ("rm", "dpo")  # examples of two sequences that stay together
SAMPLE = 64  # examples read for the mean lengths


def _builtin_task(cfg: Any):
    from placerl.tasks.addition import AdditionTask
    from placerl.tasks.reversal import ReversalTask

    d = cfg.data
    if d.builtin_task == "addition":
        return AdditionTask(carry_noise=d.builtin_noise)
    return ReversalTask(noise=d.builtin_noise)


def _texts(cfg: Any, tokenizer, limit: int) -> list[tuple[str, ...]]:
    """The first ``limit`` examples as text: (prompt, completion) or (prompt, chosen, rejected)."""
    from placerl.data import formats

    paired = cfg.stage in PAIRED
    if cfg.data.train == "builtin":
        task = _builtin_task(cfg)
        if paired:
            rows = task.preference_rows(limit, seed=cfg.seed)
            return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
        return [(r["prompt"], r["completion"]) for r in task.sft_rows(limit, seed=cfg.seed)]
    load = formats.load_preference_dataset if paired else formats.load_sft_dataset
    records = load(cfg.data.train)
    head = records.select(range(min(limit, len(records))))
    rows = formats.preference_rows if paired else formats.sft_rows
    return rows(head, tokenizer, source=str(cfg.data.train))


def example_lengths(cfg: Any, limit: int = SAMPLE) -> tuple[float, float]:
    """Mean (prompt, response) tokens of the first ``limit`` examples, responses cut to
    ``data.max_len`` as the stage cuts them (a pair's response: the mean of its two); a
    quarter of ``data.max_len`` each when the data or the tokenizer cannot be read."""
    fallback = (cfg.data.max_len / 4, cfg.data.max_len / 4)
    built = Path(cfg.run_dir) / "base_model"  # model.path null: the tiny model, once built
    tokenizer_dir = cfg.model.tokenizer or cfg.model.path or built
    if not tokenizer_dir or not Path(tokenizer_dir).is_dir():
        return fallback
    try:
        from placerl.data.collate import encode_demonstrations, encode_pairs
        from placerl.models.loading import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
        texts = _texts(cfg, tokenizer, limit)
        max_len = cfg.data.max_len
        if cfg.stage in PAIRED:
            prompts, chosen, rejected = encode_pairs(tokenizer, texts, max_len)
            responses = [(len(c) + len(r)) / 2 for c, r in zip(chosen, rejected, strict=True)]
        else:
            prompts, completions = encode_demonstrations(tokenizer, texts, max_len)
            responses = [len(c) for c in completions]
        cut = [min(r, max(0, max_len - len(p))) for p, r in zip(prompts, responses, strict=True)]
        n = max(1, len(prompts))
        return sum(map(len, prompts)) / n, sum(cut) / n
    except Exception:  # unreadable data or tokenizer: the estimate is only an estimate
        return fallback


def dataset_size(cfg: Any) -> int | None:
    """Examples in ``data.train`` (the built-in task's ``data.builtin_size``); None unread."""
    if cfg.data.train == "builtin":
        return int(cfg.data.builtin_size)
    try:
        from placerl.data import formats

        paired = cfg.stage in PAIRED
        load = formats.load_preference_dataset if paired else formats.load_sft_dataset
        return len(load(cfg.data.train))
    except Exception:
        return None


def reference_share(cfg: Any) -> float:
    """The share of steps whose reference forward runs: every step with ``online``; with
    ``cached`` the first epoch's (an example is scored once), on average over the run."""
    if cfg.stage != "dpo":
        return 0.0
    if cfg.preference.reference != "cached":
        return 1.0
    size = dataset_size(cfg)
    seen = cfg.trainer.steps * cfg.trainer.batch_size
    return 1.0 if size is None else min(1.0, size / max(1, seen))


def offline_rows(cfg: Any) -> dict[str, Any]:
    """The ``Workload`` fields of an offline stage's step (see the module docstring)."""
    prompt_len, response_len = example_lengths(cfg)
    batch = cfg.trainer.batch_size
    fields: dict[str, Any] = dict(
        prompts=batch,
        samples=1,
        prompt_len=prompt_len,
        response_len=response_len,
        reference="none",
        reference_share=reference_share(cfg),
        unit_rows=2 if cfg.stage in PAIRED else 1,
    )
    if cfg.stage == "rm":
        fields["prompts"] = 2 * batch  # each side its own row, with its prompt
    elif cfg.stage == "dpo":
        fields |= dict(samples=2, reference="all")
    return fields
