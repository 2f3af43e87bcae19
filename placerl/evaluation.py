"""Held-out evaluation: what a stage's ``evaluate()`` measures, and a few samples to read.

- Generation (every stage with prompts): greedy responses, each sample with why it stopped
  (``stop``: end_token, stop_string or length; rollout/stop_reasons.py); ``eval/accuracy`` (exact match)
  when the prompts have an ``answer`` column, ``eval/reward`` when the run has a reward (a
  rule or a reward model) — so chat prompts without answers still get a held-out number.
- Held-out loss on a file of the training format: ``eval/loss`` of SFT (the per-token NLL of
  the completions, token-weighted over the whole set, not a mean of batch means), of the
  reward model (Bradley–Terry, with ``eval/pairwise_accuracy`` and ``eval/margin``); DPO's is
  in ``algos/dpo.py``.

Results are ``Evaluation``s: the ``{name: float}`` dict every stage returned before, with the
first few held-out examples (prompt, greedy response, and answer / reward / reference where
known) alongside in ``.samples``, which the logger prints and writes to ``samples.jsonl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from placerl.algos.sft import completion_nll
from placerl.data.collate import sft_batch
from placerl.data.stream import PromptSet
from placerl.models.device import on_model_device
from placerl.models.tokens import end_token_ids
from placerl.roles.common import autocast
from placerl.roles.reward import decode_responses
from placerl.rollout.sampling import SamplingParams, generate
from placerl.rollout.stop_reasons import reason_names, with_stop_reasons
from placerl.tasks.rewards import exact_match_reward
from placerl.types import Field


class Evaluation(dict):
    """Metrics of one evaluation, a plain ``{name: float}`` dict, and ``samples``: a few
    held-out examples with what the model answered (dicts with ``prompt``, ``response``…)."""

    def __init__(self, metrics: Mapping[str, float] = (), samples: Iterable[dict] = ()):
        super().__init__(metrics)
        self.samples: list[dict[str, Any]] = list(samples)

    def merge(self, other: Mapping[str, float]) -> Evaluation:
        """This evaluation with ``other``'s metrics and samples added (in place)."""
        self.update(other)
        self.samples += getattr(other, "samples", [])
        return self


def first(prompts: PromptSet, n: int) -> PromptSet:
    """The first ``n`` prompts (with their columns)."""
    return PromptSet(
        prompts.texts[:n], prompts.token_ids[:n], {k: v[:n] for k, v in prompts.columns.items()}
    )


@torch.no_grad()
def evaluate_policy(
    model,
    tokenizer,
    prompts: PromptSet,
    *,
    max_new_tokens: int,
    stop_strings: tuple[str, ...] = (),
    reward=None,
    batch_size: int = 256,
    num_samples: int = 0,
    precision: str = "fp32",
    sampler=None,
) -> Evaluation:
    """``eval/accuracy`` (exact match, when prompts have an ``answer`` column) and
    ``eval/reward`` (the run's reward, when given) of greedy responses, and the first
    ``num_samples`` of them as samples. With neither an answer column nor a reward only the
    samples' prompts are generated. Responses are sampled where ``model`` lives and in the
    run's ``precision``; or by ``sampler(ids, mask, params)``, a rollout that samples the
    current policy where it lives (Ray workers), when given."""
    has_answer = "answer" in prompts.columns
    if not has_answer and reward is None:
        prompts = first(prompts, num_samples)
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        greedy=True,
        stop_strings=stop_strings,
        precision=precision,
    )
    correct, reward_sum, samples = 0.0, 0.0, []
    chunks = _sampled_chunks(model, tokenizer, prompts, params, batch_size, sampler=sampler)
    for chunk, batch in chunks:
        completions = decode_responses(tokenizer, batch)
        if Field.STOP_REASON not in batch.keys():  # noqa: SIM118 (placerl's sampler, here)
            ends = end_token_ids(tokenizer, model)
            batch = with_stop_reasons(batch, ends, stop_strings, tokenizer)
        rows: dict[str, list] = {"stop": reason_names(batch[Field.STOP_REASON])}
        if has_answer:
            hits = exact_match_reward(completions, chunk.columns["answer"])
            correct += sum(hits)
            rows["correct"] = hits
        if reward is not None:
            scores = reward.score(batch, chunk.as_given(), chunk.columns).float()
            reward_sum += float(scores.sum())
            rows["reward"] = scores.tolist()
        for i in range(min(len(completions), num_samples - len(samples))):
            sample = {"prompt": chunk.texts[i], "response": completions[i], "stop": None}
            sample |= {k: v[i] for k, v in chunk.columns.items() if _scalar(v[i])}
            samples.append(sample | {k: v[i] for k, v in rows.items()})
    metrics = {}
    if has_answer:
        metrics["eval/accuracy"] = correct / max(1, len(prompts))
    if reward is not None:
        metrics["eval/reward"] = reward_sum / max(1, len(prompts))
    return Evaluation(metrics, samples)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


@torch.no_grad()
def sft_loss(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    *,
    max_len: int,
    precision: str = "fp32",
    batch_size: int = 64,
) -> float:
    """Mean NLL per completion token over all ``pairs`` (what ``loss/sft`` is per batch)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        batch = sft_batch(tokenizer, pairs[start : start + batch_size], max_len)
        batch = on_model_device(batch, model)
        with autocast(precision):  # the LM head in chunks: no (B, T, V) logits (algos/sft.py)
            total += float(completion_nll(model, batch))
        tokens += int((batch["labels"][:, 1:] != -100).sum())  # position p predicts p + 1
    model.train(was_training)
    return total / max(1, tokens)


def reward_model_metrics(
    algo, triples: list[tuple[str, str, str]], num_samples: int = 0
) -> Evaluation:
    """Held-out pairwise accuracy, Bradley–Terry loss and mean margin of a reward model, and
    the first ``num_samples`` pairs with their two scores."""
    from placerl.algos.reward_model import bradley_terry_loss

    chosen, rejected = algo.held_out_scores(triples)
    metrics = {
        "eval/pairwise_accuracy": float((chosen > rejected).float().mean()),
        "eval/loss": float(bradley_terry_loss(chosen, rejected)),
        "eval/margin": float((chosen - rejected).mean()),
    }
    samples = [
        {
            "prompt": prompt,
            "chosen": good,
            "rejected": bad,
            "score_chosen": float(chosen[i]),
            "score_rejected": float(rejected[i]),
        }
        for i, (prompt, good, bad) in enumerate(triples[:num_samples])
    ]
    return Evaluation(metrics, samples)


@torch.no_grad()
def kl_to_reference(
    model,
    reference,
    tokenizer,
    prompts: PromptSet,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """KL(π‖π_ref) per response, in nats: the mean over sampled responses y ~ π of
    Σ_t log π(y_t|·) − log π_ref(y_t|·) (the k1 estimator; unbiased for the sequence KL)."""
    from placerl.roles.common import response_log_probs

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    was_training = reference.training
    reference.eval()
    for _, batch in _sampled_chunks(model, tokenizer, prompts, params, batch_size, generator):
        ref, _ = response_log_probs(reference, batch, temperature)
        diff = (batch["old_log_probs"] - ref) * batch["response_mask"]
        total += float(diff.sum())
    reference.train(was_training)
    return total / max(1, len(prompts))


def _sampled_chunks(
    model, tokenizer, prompts: PromptSet, params, batch_size, generator=None, sampler=None
):
    """(prompt chunk, sampled batch) over the prompts, ``batch_size`` at a time."""
    for start in range(0, len(prompts), batch_size):
        idx = list(range(start, min(start + batch_size, len(prompts))))
        chunk = prompts.batch(idx, tokenizer.pad_token_id)
        if sampler is not None:
            yield chunk, sampler(chunk.ids, chunk.mask, params)
            continue
        batch = generate(
            model,
            chunk.ids,
            chunk.mask,
            params,
            eos_token_id=end_token_ids(tokenizer, model),
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
            tokenizer=tokenizer,
        )
        yield chunk, batch
