"""BRAIn (Pandey et al. 2024, "BRAIn: Bayesian Reward-conditioned Amortized Inference for
natural language generation from feedback"): distil the reward-conditioned posterior into the
policy by self-normalized importance sampling, with the self-normalized baseline.

With the SFT policy as prior p(y|x) and a Bradley-Terry reward, the posterior given "the output
is good" is the PPO-optimal policy p(y | x, G=1) ∝ p(y|x)·exp(r(x, y)/β). For n samples y_i
from a proposal q(y|x), the self-normalized importance weights of the posterior are

    α_i = softmax_i( r(x, y_i)/β + log p(y_i|x) − log q(y_i|x) ),

and the self-normalized baseline weights of the policy q_θ being trained are (the paper calls
them β_i; b_i here, to keep β for the temperature)

    b_i = softmax_i( log q_θ(y_i|x) − log q(y_i|x) ).

The BRAIn gradient (of the loss to minimise) is −Σ_i (α_i − b_i) ∇ log q_θ(y_i|x), with α and
b held constant; without the b_i term it is the high-variance DPG estimator (the authors'
gradient_estimators.py in gauravpandeyamu/BRAIn_experiments computes exactly α̂ − β̂). It is
the gradient of

    L = KL(α ‖ b) = Σ_i α_i (log α_i − log b_i),

the KL between the two self-normalized distributions over the n samples, which is what
``brain_loss`` computes: a number ≥ 0 that is 0 iff the policy's weights match the posterior's
(the "self-normalized KL" the paper's estimator is unbiased for). With n = 2, q = p and α
replaced by the one-hot of the higher reward, L = −log σ(h_w − h_l), h = log q_θ − log p: the
DPO loss with β_DPO = 1 (the paper's "DPO-sft is a special case").

Departures from the paper:
- The goodness likelihood is taken as log p(G=1|y,x) = r(x, y)/β (its Bradley-Terry / PPO
  case); the paper's more general reward-conditioned posterior is not offered.
- Sequence log-probs are sums over response tokens under the run's sampling temperature (the
  proposal's were recorded at sampling time, untruncated: with top-k / top-p sampling the
  weights are off by the truncation).
- With ``brain.proposal: policy`` the proposal is the trained policy (a snapshot at most
  ``placement.max_staleness`` updates old) and the prior the reference model; with ``sft`` (the
  paper's setting) proposal and prior are the same model, so log p − log q is exactly 0 and no
  reference model is run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from placerl.algos.online import Needs, Roles, experience_metrics, score
from placerl.algos.preference import sequence_log_probs
from placerl.config.preference import BRAInConfig
from placerl.data.stream import PromptBatch
from placerl.timing import PhaseTimer
from placerl.types import Batch, Field


def brain_weights(
    scores: Tensor,  # (G, n) r(x, y_i)
    prior_log_probs: Tensor,  # (G, n) log p(y_i | x), the SFT prior
    proposal_log_probs: Tensor,  # (G, n) log q(y_i | x), who sampled y_i
    beta: float,
) -> Tensor:
    """(G, n) self-normalized importance weights α of the posterior ∝ p·exp(r/β); rows sum to 1."""
    if not beta > 0:
        raise ValueError(f"beta={beta}: expected a number > 0")
    logits = scores / beta + prior_log_probs - proposal_log_probs
    return torch.softmax(logits.detach().double(), dim=-1).to(scores.dtype)


def brain_loss(
    policy_log_probs: Tensor,  # (G, n) log q_θ(y_i | x), with gradient
    proposal_log_probs: Tensor,  # (G, n) log q(y_i | x)
    target_weights: Tensor,  # (G, n) α from ``brain_weights``
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean over prompts of KL(α ‖ b), b = softmax(log q_θ − log q): the BRAIn objective.

    Its gradient is −Σ_i (α_i − b_i) ∇ log q_θ(y_i) / G. Stats: the mean KL, the effective
    sample share of α (1/(n·Σα²): 1 for uniform weights, 1/n for one-hot), the largest α.
    """
    alpha = target_weights.detach()
    log_b = torch.log_softmax(policy_log_probs - proposal_log_probs.detach(), dim=-1)
    kl = (torch.xlogy(alpha, alpha) - alpha * log_b).sum(-1)  # (G,)
    loss = kl.mean()
    n = alpha.shape[-1]
    with torch.no_grad():
        stats = {
            "loss/brain": loss.detach(),
            "brain/ess_share": (1.0 / (n * alpha.square().sum(-1))).mean(),
            "brain/max_weight": alpha.amax(-1).mean(),
        }
    return loss, stats


@dataclass(frozen=True)
class BRAInObjective:
    """The BRAIn loss of a [G, n] batch (the n samples of each prompt) given the policy's
    (G, n, R) log-probs. A frozen dataclass, so a remote actor can receive it.

    Log-probs at the sampling temperature (``temperature`` None): the importance weights
    compare the policy with the proposal whose log-probs the sampler recorded at that
    temperature (see the module docstring)."""

    beta: float = 1.0
    temperature: float | None = None  # None: the sampling temperature (GroupedObjective)

    def target_weights(self, groups: Batch) -> Tensor:
        """α of each prompt's samples; the prior is the reference when the batch has its
        log-probs, else the proposal itself (proposal sft: log p − log q = 0)."""
        mask = groups[Field.RESPONSE_MASK]
        proposal = sequence_log_probs(groups[Field.OLD_LOG_PROBS], mask)
        prior = proposal
        if Field.REF_LOG_PROBS in groups.keys():  # noqa: SIM118 (TensorDict has no `in`)
            prior = sequence_log_probs(groups[Field.REF_LOG_PROBS], mask)
        return brain_weights(groups[Field.SCORES], prior, proposal, self.beta)

    def __call__(self, log_probs: Tensor, mb: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        mask = mb[Field.RESPONSE_MASK]  # (G, n, R)
        policy = sequence_log_probs(log_probs, mask)
        proposal = sequence_log_probs(mb[Field.OLD_LOG_PROBS], mask)
        return brain_loss(policy, proposal, self.target_weights(mb))


class BRAIn:
    """One step: n proposal samples per prompt → rewards (→ prior log-probs) → importance
    weights → BRAIn update over the groups."""

    def __init__(self, cfg: BRAInConfig, needs_reference: bool):
        self.cfg = cfg
        # the proposal's log q are the sampler's own log-probs: never replaced by the trainer's
        self.needs = Needs(
            reference=needs_reference,
            samples_per_prompt=cfg.num_samples,
            proposal="policy" if cfg.proposal == "policy" else "initial",
            old_log_probs="sampler",
        )
        self.objective = BRAInObjective(beta=cfg.beta)

    def experience(
        self, roles: Roles, batch: Batch, prompts: PromptBatch, timer: PhaseTimer
    ) -> Batch:
        """Rewards (and the prior's log-probs) of every proposal sample."""
        return score(roles, batch, prompts, timer)

    def learn(self, roles: Roles, batch: Batch, timer: PhaseTimer, step: int) -> dict[str, float]:
        metrics = experience_metrics(batch)
        groups = batch.reshape(-1, self.cfg.num_samples)
        with timer.phase("weights"):
            weights = self.objective.target_weights(groups)
        n = self.cfg.num_samples
        metrics["brain/target_ess_share"] = float((1.0 / (n * weights.square().sum(-1))).mean())
        with timer.phase("update"):
            metrics |= roles.actor.fit_grouped(
                groups, self.objective, self.cfg.epochs, self.cfg.minibatches
            )
        return metrics

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
