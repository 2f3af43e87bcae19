"""Names shared by every layer: the roles of an RLHF step and the fields of the one batch type.

A batch is a ``tensordict.TensorDict`` whose leading dimension is the sample (one prompt and
one response). Sequences are laid out as ``[prompt | response]``: prompts are LEFT-padded to a
common width P, responses are RIGHT-padded to a common width R, so every response starts at
column P and per-token quantities over the response are plain (B, R) tensors.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from tensordict import TensorDict
from torch import Tensor

Batch = TensorDict


class GroupedObjective(Protocol):
    """A loss over a [G, n] batch of groups (preference pairs, a prompt's samples) given the
    policy's (G, n, R) response log-probs: what ``ActorWorker.fit_grouped`` minimises.

    ``temperature`` declares the one the log-probs are taken at; None is the sampling
    temperature. A picklable value (a frozen dataclass), so a remote actor can receive it.
    """

    temperature: float | None

    def __call__(self, log_probs: Tensor, mb: Batch) -> tuple[Tensor, dict[str, Tensor]]: ...


class Role(str, Enum):
    """The models (and their operations) an RLHF step is made of."""

    ACTOR = "actor"  # the policy being trained: log-probs, policy update
    ROLLOUT = "rollout"  # sampling with the actor's weights (a shadow copy under Separate)
    CRITIC = "critic"  # value model: per-token values, value update
    REWARD = "reward"  # reward model or rule function: one score per sample
    REFERENCE = "reference"  # frozen initial policy: log-probs for the KL term


class Field:
    """Batch field names, with their shapes. Use these constants, not string literals."""

    PROMPT_IDS = "prompt_ids"  # (B, P) int64, left-padded prompt tokens
    PROMPT_MASK = "prompt_mask"  # (B, P) int64, 1 on real prompt tokens
    RESPONSE_IDS = "response_ids"  # (B, R) int64, right-padded sampled tokens (EOS included)
    RESPONSE_MASK = "response_mask"  # (B, R) int64, 1 on real response tokens (EOS included)
    INPUT_IDS = "input_ids"  # (B, P+R) int64, [prompt | response]
    ATTENTION_MASK = "attention_mask"  # (B, P+R) int64
    OLD_LOG_PROBS = "old_log_probs"  # (B, R) float, log π_old(y_t | ·) before the update
    # (B, R) float, log μ(y_t | ·) of the sampler, kept when OLD_LOG_PROBS are recomputed by
    # the trainer (stale samples); the policy loss then applies truncated importance weights
    ROLLOUT_LOG_PROBS = "rollout_log_probs"
    REF_LOG_PROBS = "ref_log_probs"  # (B, R) float, log π_ref(y_t | ·)
    VALUES = "values"  # (B, R) float, V(s_t) before the update
    SCORES = "scores"  # (B,) float, reward of the whole response
    TOKEN_REWARDS = "token_rewards"  # (B, R) float, score at the last token minus KL penalty
    ADVANTAGES = "advantages"  # (B, R) float
    RETURNS = "returns"  # (B, R) float, value targets
    STALENESS = "staleness"  # (B,) int64, policy versions between sampling and training
    # (B,) int64, why the response stopped: 0 end token, 1 stop string, 2 the token budget
    # (cut at max_new_tokens); set by the rollout role (placerl/rollout/stop_reasons.py)
    STOP_REASON = "stop_reason"
    # multi-turn episodes (rollout/episodes/): RESPONSE_MASK is 1 on the model's tokens only
    EPISODE_REWARD = "episode_reward"  # (B,) float, the episode's score (env or function)
    EPISODE_STATS = "episode_stats"  # (B, K) float, per-episode counts (episodes/metrics.py)
