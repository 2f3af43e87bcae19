"""Starter data for ``placerl init``: small files in every format placerl reads, written next
to the config so that it runs from a pip install (no repository checkout).

The rows are the built-in digit-reversal task (``rev 52814=`` → ``41825``; placerl/tasks),
in the conversational format of chat models (lists of ``{"role", "content"}`` messages), so the
trained policy answers through its chat template, as ``placerl generate`` asks it: SFT
``messages``; prompts with an ``answer`` column (the rule reward and eval/accuracy read it);
``prompt``/``chosen``/``rejected`` preference pairs. Replace them with your own rows in the
same format.
"""

from __future__ import annotations

from placerl.tasks.reversal import ReversalTask

ROWS = {"sft": 4000, "prompts": 1000, "eval_prompts": 64, "preferences": 2000}


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def sft_rows(seed: int = 0) -> list[dict]:
    rows = ReversalTask().sft_rows(ROWS["sft"], seed)
    return [{"messages": _user(r["prompt"]) + _assistant(r["completion"])} for r in rows]


def prompt_rows(split: str = "train", seed: int = 0) -> list[dict]:
    n = ROWS["prompts" if split == "train" else "eval_prompts"]
    rows = ReversalTask(split=split).prompt_rows(n, seed)
    return [{"prompt": _user(r["prompt"]), "answer": r["answer"]} for r in rows]


def preference_rows(seed: int = 0) -> list[dict]:
    rows = ReversalTask().preference_rows(ROWS["preferences"], seed)
    return [
        {
            "prompt": _user(r["prompt"]),
            "chosen": _assistant(r["chosen"]),
            "rejected": _assistant(r["rejected"]),
        }
        for r in rows
    ]


FILES = {
    "sft.jsonl": sft_rows,
    "prompts.jsonl": prompt_rows,
    "eval_prompts.jsonl": lambda: prompt_rows("eval"),
    "preferences.jsonl": preference_rows,
}
