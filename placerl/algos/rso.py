"""RSO: statistical rejection sampling toward π* and preference pairs from the accepted samples
(Liu et al. 2023, "Statistical Rejection Sampling Improves Preference Optimization").

The target is the optimum of the KL-constrained reward objective (the paper's eq. 4),

    π*(y | x) ∝ π_sft(y | x) · exp(r(x, y) / β),

and the proposal is π_sft itself, so the acceptance ratio π*/(M·π_sft) reduces to
exp((r − r_max) / β) with r_max the largest reward not yet accepted (appendix A.1, eq. 14).
Algorithm 1, per prompt, over N candidates sampled from π_sft:

    while fewer than k are accepted:
        r_max = max reward among the candidates not yet accepted
        for each remaining candidate i, in order:
            accept it if u_i < exp((r_i − r_max) / β), u_i ~ U[0, 1); stop at the k-th

Accepted candidates leave the pool (sampling without replacement) and r_max is recomputed each
round. The best remaining candidate always passes (exp(0) = 1 > u), so every round accepts at
least one and the loop ends within k rounds. With many candidates the accepted samples follow
π* (Theorem 1; tests/algos/test_rso.py checks it with a chi-square test).

Pairs (section 5.2): ``first_round`` pairs the accepted samples in acceptance order, (1, 2),
(3, 4), … — k // 2 pairs; ``tournament`` lets each pair's winner play on until one is left —
k − 1 pairs (an odd player out gets a bye). The label is the reward: the higher one is chosen.

Departures from the paper:
- Candidates are positions, not strings. Algorithm 1 keys its pool by response text, so equal
  responses collapse into one candidate; that biases the result toward π_sft whenever responses
  repeat (a small output space, a confident policy). Here equal responses stay separate draws.
- All prompts are processed at once: each round draws a uniform for every candidate of every
  prompt, also those after the k-th acceptance, which the paper's loop never reaches. Same
  distribution, a different use of the random stream.
- The candidates are sampled at ``rollout.temperature``: Algorithm 1 is exact for samples of
  π_sft at temperature 1; at another temperature the proposal, and with it the accepted
  distribution, is the tempered π_sft. The DPO/SLiC loss on the pairs reads log-probs at
  temperature 1, on π and π_ref themselves (``PairObjective.temperature``).
- Labels come from pointwise scores (a reward model or a rule), not the paper's pairwise
  reward-ranking model ρ_ψ. Pairs with equal rewards carry no preference: they are skipped and
  counted (``Pairs.ties``); in a tournament the first of two tied players moves on.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.algos.pair_training import (
    PairObjective,
    Pairs,
    label_pairs,
    pair_metrics,
    train_on_pairs,
)
from placerl.config.preference import RSOConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field

Ranking = Literal["first_round", "tournament"]


def statistical_rejection_sampling(
    scores: Tensor,  # (G, N) reward of each candidate, G prompts × N candidates
    num_accepted: int,
    beta: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(G, k) indices of the accepted candidates of each prompt, in the order of acceptance.

    Algorithm 1 of the paper for every prompt at once (see the module docstring); all
    randomness comes from ``generator``, so a seeded generator reproduces the selection.
    """
    groups, candidates = scores.shape
    if not 1 <= num_accepted <= candidates:
        raise ValueError(f"num_accepted={num_accepted}: expected 1 … {candidates} (candidates)")
    if not beta > 0:
        raise ValueError(f"beta={beta}: expected a number > 0")
    finite = torch.isfinite(scores.detach())
    if not bool(finite.all()):  # NaN or ±inf: no candidate would ever pass, the loop would spin
        group, candidate = (~finite).nonzero()[0].tolist()
        raise ValueError(
            f"rejection sampling needs finite rewards; prompt {group}, candidate {candidate} "
            f"has {float(scores[group, candidate])}"
        )
    rewards = scores.detach().double()
    remaining = torch.ones_like(rewards, dtype=torch.bool)
    rank = torch.full_like(rewards, num_accepted, dtype=torch.long)  # k: not accepted
    count = torch.zeros(groups, dtype=torch.long, device=rewards.device)
    while bool((count < num_accepted).any()):
        r_max = rewards.masked_fill(~remaining, float("-inf")).amax(-1, keepdim=True)
        ratio = torch.exp((rewards - r_max) / beta)  # ≤ 1 on the remaining candidates
        u = torch.rand(rewards.shape, generator=generator, dtype=torch.float64).to(rewards)
        new = remaining & (u < ratio) & (count < num_accepted)[:, None]
        position = count[:, None] + new.long().cumsum(-1)  # acceptance number, 1-based
        new &= position <= num_accepted  # the paper's `break` at the k-th acceptance
        rank = torch.where(new, position - 1, rank)
        remaining &= ~new
        count += new.long().sum(-1)
    return rank.argsort(dim=-1, stable=True)[:, :num_accepted]


def _matches(players: list[int], ranking: Ranking, scores: list[float]) -> list[tuple[int, int]]:
    """The (a, b) games of one prompt's accepted candidates, in play order."""
    games: list[tuple[int, int]] = []
    while len(players) > 1:
        winners = []
        for a, b in zip(players[0::2], players[1::2], strict=False):
            games.append((a, b))
            winners.append(b if scores[b] > scores[a] else a)  # a tie: the first moves on
        if len(players) % 2:
            winners.append(players[-1])  # bye
        if ranking == "first_round":
            break
        players = winners
    return games


def rank_pairs(
    accepted: Tensor,  # (G, k) candidate indices in acceptance order
    scores: Tensor,  # (G, N)
    ranking: Ranking = "first_round",
) -> Pairs:
    """Preference pairs from each prompt's accepted candidates, labelled by reward.

    Indices in the result are flat positions in the (G·N) candidate batch (prompt-major).
    """
    if ranking not in ("first_round", "tournament"):
        raise ValueError(f"unknown ranking {ranking!r}; expected first_round or tournament")
    width = scores.shape[1]
    rows = scores.detach().tolist()
    games: list[tuple[int, int]] = []
    for g, players in enumerate(accepted.tolist()):
        games += [(g * width + a, g * width + b) for a, b in _matches(players, ranking, rows[g])]
    return label_pairs(games, scores.detach().reshape(-1))


class RSO:
    """One step: N samples per prompt from π_sft (the frozen initial policy: a rollout that is
    never synced) → rewards → rejection sampling toward π* → pairs of accepted samples →
    reference log-probs of the pairs → DPO/SLiC/IPO update."""

    def __init__(self, cfg: RSOConfig, objective: PairObjective, seed: int = 0):
        self.cfg = cfg
        self.objective = objective
        self.needs = Needs(
            reference=True,
            samples_per_prompt=cfg.num_candidates,
            proposal="initial",
            old_log_probs="sampler",
        )
        self.generator = torch.Generator().manual_seed(seed + 4099)

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """Rewards of every candidate; the reference is asked for the pairs' alone."""
        return score(roles, batch, prompts, timer, reference=False)

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        metrics = experience_metrics(batch)
        with timer.phase("rejection"):
            scores = batch[Field.SCORES].view(-1, self.cfg.num_candidates)
            accepted = statistical_rejection_sampling(
                scores, self.cfg.num_accepted, self.cfg.beta, self.generator
            )
            pairs = rank_pairs(accepted, scores, self.cfg.ranking)
        metrics["rso/accepted_reward"] = float(scores.gather(1, accepted).mean())
        metrics |= pair_metrics(batch, pairs)
        metrics |= train_on_pairs(
            roles, batch, pairs, self.objective, timer, self.cfg.epochs, self.cfg.minibatches
        )
        return metrics

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
