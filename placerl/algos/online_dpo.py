"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback";
TRL's ``OnlineDPOTrainer``): each step the policy samples n ≥ 2 responses per prompt, the reward
(a reward model, or a rule standing in for the AI annotator) ranks them, and the best-vs-worst
pairs train the policy with the DPO, SLiC or IPO loss against the frozen reference.

Departures: OAIF samples exactly two responses and asks an LLM which is better; here n responses
are scored pointwise and ``pairs_per_prompt`` pairs are formed from the ranking: best vs worst,
2nd best vs 2nd worst, … Equal rewards carry no preference: such pairs are skipped and counted.
How stale the sampling policy may be is the runtime's business (``placement.max_staleness``:
0 samples from the current policy, as in the paper; a large bound samples from the initial
policy throughout, i.e. offline DPO on SFT samples); the batch records it. The loss reads the
policy's and the reference's log-probs at temperature 1 (the objective is on π itself);
``rollout.temperature`` only shapes which responses get compared.
"""

from __future__ import annotations

from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.algos.pair_training import (
    PairObjective,
    Pairs,
    label_pairs,
    pair_metrics,
    train_on_pairs,
)
from placerl.config.preference import OnlineDPOConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


def best_worst_pairs(scores, pairs_per_prompt: int = 1) -> Pairs:
    """Pairs (j-th best, j-th worst), j < ``pairs_per_prompt``, of each prompt's (G, n) scores.

    Indices are flat positions in the (G·n) batch; the sort is stable, so among equal rewards
    the earlier sample ranks higher (and ties are left out anyway).
    """
    groups, n = scores.shape
    if not 1 <= pairs_per_prompt <= n // 2:
        raise ValueError(f"pairs_per_prompt={pairs_per_prompt}: expected 1 … {n // 2} (n // 2)")
    order = scores.detach().argsort(dim=-1, descending=True, stable=True).tolist()
    games = [
        (g * n + order[g][j], g * n + order[g][n - 1 - j])
        for g in range(groups)
        for j in range(pairs_per_prompt)
    ]
    return label_pairs(games, scores.detach().reshape(-1))


class OnlineDPO:
    """One step: n samples per prompt from the trained policy (at most max_staleness old) →
    rewards → best-vs-worst pairs → reference log-probs of the pairs → preference update."""

    def __init__(self, cfg: OnlineDPOConfig, objective: PairObjective, samples_per_prompt: int):
        self.cfg = cfg
        self.objective = objective
        self.needs = Needs(
            reference=True, samples_per_prompt=samples_per_prompt, old_log_probs="sampler"
        )

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """Rewards of every sample; the reference is asked for the pairs' alone (``learn``)."""
        return score(roles, batch, prompts, timer, reference=False)

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        metrics = experience_metrics(batch)
        with timer.phase("pairs"):
            scores = batch[Field.SCORES].view(-1, self.needs.samples_per_prompt)
            pairs = best_worst_pairs(scores, self.cfg.pairs_per_prompt)
        metrics |= pair_metrics(batch, pairs)
        metrics |= train_on_pairs(
            roles, batch, pairs, self.objective, timer, self.cfg.epochs, self.cfg.minibatches
        )
        return metrics

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
