"""The reward: one score per response, from a Python rule or a learned reward model.

A rule reward is any function named ``module:function`` with this signature::

    def reward(completions: list[str], prompts: list, **columns) -> list[float]

``completions`` are the decoded responses (special tokens removed), ``prompts`` the prompts as
the dataset gave them, like TRL: the string for plain data, the list of ``{"role",
"content"}`` messages for chat data (not the text the chat template rendered), and
``columns`` every other column of the prompt dataset as lists aligned with the completions
(e.g. ``answer``). It returns one finite number per completion. Anything else — an
exception, a wrong length, a non-number — is the user's to fix and is reported as such.
"""

from __future__ import annotations

import importlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from placerl.errors import UserError, user_frame
from placerl.models.precision import autocast
from placerl.models.scores import sequence_scores
from placerl.models.shared_prefix import position_ids
from placerl.types import Batch, Field

RewardFn = Callable[..., Sequence[float]]


def import_reward_function(spec: str) -> RewardFn:
    """Resolve ``module:function`` the way ``python -m`` would from the user's directory: the
    current working directory first (a ``rewards.py`` next to the user, or ``examples/`` in the
    repository root), then ``PYTHONPATH`` and installed packages. The console script's own
    ``sys.path`` holds neither, so the directory is added here (and stays, for the module's
    own later imports; Ray workers inherit the driver's ``sys.path``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"expected 'module:function', got {spec!r}", where="reward.function")
    cwd = os.getcwd()
    if cwd not in sys.path and os.path.realpath(cwd) not in map(os.path.realpath, sys.path):
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise UserError(_not_found(module_name, err, cwd), where="reward.function") from None
    except (Exception, SystemExit) as err:  # the user's module failed while importing
        raise UserError(
            f"importing {module_name!r} raised {_describe(err)}", "reward.function"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        where = getattr(module, "__file__", None) or module_name
        raise UserError(f"{where} has no function {attr!r}", where="reward.function")
    return fn


def _not_found(module_name: str, err: ModuleNotFoundError, cwd: str) -> str:
    """Which module is missing, where it was looked for, and how to make it importable."""
    missing = err.name or module_name
    if module_name != missing and not module_name.startswith(missing + "."):
        return (
            f"module {module_name!r} was found but it imports {missing!r}, which is not "
            f"installed ({err})"
        )
    top = module_name.split(".")[0]
    return (
        f"cannot import module {module_name!r}: no module {missing!r} in the current directory "
        f"({cwd}), on PYTHONPATH or among installed packages. Run placerl from the directory "
        f"that holds {top}.py (or the {top}/ package), or add that directory to PYTHONPATH"
    )


def decode_responses(tokenizer, batch: Batch) -> list[str]:
    ids = batch[Field.RESPONSE_IDS].masked_fill(
        batch[Field.RESPONSE_MASK] == 0, tokenizer.pad_token_id
    )
    return tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)


# Scores go through batch means, standard deviations and whitening in float32, which square
# them: beyond this a finite Python float (1e38, or 1e30 x reward.scale) turns the batch
# statistics into inf and the policy into NaN. No sensible reward comes near it.
MAX_ABS_SCORE = 1e15


class RuleReward:
    model = None  # a rule has no model to place

    def __init__(self, fn: RewardFn, tokenizer, name: str, scale: float = 1.0):
        self.fn, self.tokenizer, self.name, self.scale = fn, tokenizer, name, scale

    def score(self, batch: Batch, prompts: list, columns: dict[str, list]) -> torch.Tensor:
        return self.call(decode_responses(self.tokenizer, batch), prompts, columns)

    def call(
        self, completions: list[str], prompts: list, columns: dict[str, list], **extra
    ) -> torch.Tensor:
        """The function on ``completions``, its failures reported as the user's (``extra``:
        more keyword arguments, e.g. episodes' ``conversations``)."""
        with _watch_sigint() as sigint:
            try:
                scores = self.fn(completions=completions, prompts=prompts, **extra, **columns)
            except KeyboardInterrupt:
                if sigint["hit"]:  # Ctrl-C while the reward ran: the user's interrupt
                    raise
                raise UserError(
                    "reward function raised KeyboardInterrupt", where=self.name
                ) from None
            except (Exception, SystemExit) as err:  # the user's code: report it as theirs
                raise UserError(f"reward function raised {_describe(err)}", self.name) from err
        return check_scores(scores, len(completions), self.name, self.scale)


def _describe(err: BaseException) -> str:
    """``SystemExit(7)``, ``ValueError: boom``: the exception as the user would recognise it."""
    where = user_frame(err) or ""
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r}){where} (a reward must return scores, not exit)"
    return f"{type(err).__name__}: {err}{where}"


@contextmanager
def _watch_sigint() -> Iterator[dict[str, bool]]:
    """Tell a real Ctrl-C (a SIGINT arrived) from a reward function that raises
    KeyboardInterrupt itself; only the main thread can see signals."""
    state = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        state["hit"] = True
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def check_scores(scores, expected: int, name: str, scale: float = 1.0) -> torch.Tensor:
    """``scale`` x the scores as a (B,) float32 tensor, or a UserError saying what came back
    instead: not a list, a wrong length, a non-number, non-finite, or too large for float32
    arithmetic (``MAX_ABS_SCORE``)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().flatten().tolist()
    if not isinstance(scores, (list, tuple)):
        raise UserError(
            f"reward function must return a list of floats, got {type(scores).__name__}", name
        )
    if len(scores) != expected:
        raise UserError(
            f"reward function returned {len(scores)} scores for {expected} completions", name
        )
    for i, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise UserError(
                f"reward function returned {s!r} at index {i}; expected a finite float", name
            )
        check_magnitude(float(s) * scale, i, name, scale)
    # scaled in float64 first: a float32 scale of 1e300 would be inf, and 0 x inf is NaN
    return torch.tensor([float(s) * scale for s in scores], dtype=torch.float32)


def check_magnitude(value: float, index: int, name: str, scale: float) -> None:
    """A scaled score that is non-finite or beyond ``MAX_ABS_SCORE`` is the reward's error."""
    if math.isfinite(value) and abs(value) <= MAX_ABS_SCORE:
        return
    scaled = f" (score x reward.scale={scale:g})" if scale != 1.0 else ""
    raise UserError(
        f"reward score at index {index} is {value:g}{scaled}: beyond +-{MAX_ABS_SCORE:g}, where "
        "float32 batch statistics overflow (inf/NaN); rescale the reward",
        name,
    )


class ModelReward:
    """A reward model with a scalar head, read at each sequence's last attended token (the
    response's last token: its end token when it stopped, ``sequence_scores``)."""

    def __init__(
        self, model, *, precision: str = "fp32", scale: float = 1.0, name: str = "reward.model"
    ):
        self.model = model.eval().requires_grad_(False)
        self.precision, self.scale, self.name = precision, scale, name

    @torch.no_grad()
    def score(self, batch: Batch, prompts: list, columns: dict[str, list]) -> torch.Tensor:
        mask = batch[Field.ATTENTION_MASK]
        with autocast(self.precision):
            scores = sequence_scores(
                self.model, batch[Field.INPUT_IDS], mask, position_ids=position_ids(mask)
            )
        scores = self.scale * scores.float()
        bad = ~torch.isfinite(scores) | (scores.abs() > MAX_ABS_SCORE)
        if bool(bad.any()):
            index = int(bad.nonzero()[0])
            check_magnitude(float(scores[index]), index, f"reward model {self.name}", self.scale)
        return scores


# ---------------------------------------------------------------- multi-turn episodes


def final_answer(messages: list[dict]) -> str:
    """The content of a conversation's last assistant message ("" if it has none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")


class EpisodeScorer:
    """Scores finished episodes where they ran (``EpisodeSetup.score``): ``function`` None,
    the environment's rewards (summed over its steps; 0 for an episode it never rewarded,
    counted by ``env/rewarded``); else that rule reward called with the final answers as
    ``completions`` and ``conversations=`` the whole conversations (lists of messages), with
    the prompts and dataset columns as for single responses. Unscaled: ``EpisodeReward``
    applies ``reward.scale``."""

    def __init__(self, function: RuleReward | None = None, name: str = "env"):
        self.function, self.name = function, name

    def __call__(self, episodes) -> list[float]:
        if self.function is None:
            return [self._env_reward(e.reward, i) for i, e in enumerate(episodes)]
        rows = [e.row for e in episodes]
        columns = {k: [r[k] for r in rows] for k in (rows[0] if rows else {}) if k != "prompt"}
        conversations = [list(e.messages) for e in episodes]
        scores = self.function.call(
            [final_answer(c) for c in conversations],
            [r["prompt"] for r in rows],
            columns,
            conversations=conversations,
        )
        return scores.tolist()

    def _env_reward(self, reward, index: int) -> float:
        if reward is None:
            return 0.0
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            raise UserError(
                f"the environment's reward of episode {index} is {reward!r}; expected a float",
                self.name,
            )
        check_magnitude(float(reward), index, self.name, 1.0)
        return float(reward)


class EpisodeReward:
    """The reward role of an episode run scored where its episodes ran: it reads each row's
    ``Field.EPISODE_REWARD`` (the rollout's ``EpisodeScorer``) and applies ``reward.scale``."""

    model = None  # nothing to place

    def __init__(self, scale: float = 1.0, name: str = "env.reward"):
        self.scale, self.name = scale, name

    def score(self, batch: Batch, prompts: list, columns: dict[str, list]) -> torch.Tensor:
        scores = batch[Field.EPISODE_REWARD].double() * self.scale
        for index, value in enumerate(scores.tolist()):
            check_magnitude(value, index, self.name, self.scale)
        return scores.float()
