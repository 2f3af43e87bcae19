"""Multi-turn episodes: the token-exact record, observation tokens tokenised alone, the runner
that drives a batch of episodes turn by turn, their batch layout, metrics and samples."""

from placerl.rollout.episodes.batch import episodes_to_batch
from placerl.rollout.episodes.bridge import ChatBridge
from placerl.rollout.episodes.engines import PlacerlTurns
from placerl.rollout.episodes.metrics import episode_metrics, sample_record
from placerl.rollout.episodes.record import EndReason, Episode, Segment, Source, Turn
from placerl.rollout.episodes.runner import TurnSampler, draw_uniforms, run_episodes

__all__ = [
    "ChatBridge",
    "EndReason",
    "Episode",
    "PlacerlTurns",
    "Segment",
    "Source",
    "Turn",
    "TurnSampler",
    "draw_uniforms",
    "episode_metrics",
    "episodes_to_batch",
    "run_episodes",
    "sample_record",
]
