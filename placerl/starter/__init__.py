"""``placerl init STAGE``: a commented starter config and the data it names, in one folder.

``write_starter`` writes ``STAGE.yaml`` (``starter/config.py``: generated from the schema), the
data files the config reads into ``data/`` (``starter/data.py``), and for stages with a rule
reward ``rewards.py``, an example reward function the config names as ``rewards:digits_match``
(imported from the directory ``placerl train`` runs in). Paths in the config are relative to
that folder: run ``placerl train STAGE.yaml`` from it. Existing files are never overwritten
unless asked (``force``); a data file another stage's starter wrote the same is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from placerl.errors import UserError
from placerl.starter import config, data

REWARDS_PY = '''"""Your reward: fn(completions, prompts, **columns) -> list[float] (README: Rewards).

``completions``: the decoded responses; ``prompts``: as the data gives them (here lists of
chat messages); ``columns``: the other columns of the prompt data, here ``answer``.
"""


def digits_match(completions, prompts, answer, **_):
    """1.0 for the exact answer, else half the share of digits in the right place."""
    scores = []
    for completion, target in zip(completions, answer):
        got = completion.strip()
        same = sum(a == b for a, b in zip(got, target))
        scores.append(1.0 if got == target else 0.5 * same / max(len(target), len(got), 1))
    return scores
'''


def planned_files(stage: str) -> dict[str, str]:
    """Relative path → contents of everything ``init`` writes for ``stage``."""
    if stage not in config.SECTIONS:
        raise UserError(
            f"unknown stage {stage!r}; expected one of {', '.join(config.SECTIONS)}", "init"
        )
    cfg = config.settings(stage)
    files = {f"{stage}.yaml": config.render(stage)}
    for path in filter(None, [cfg.data.train, cfg.data.eval]):
        rows = data.FILES[Path(path).name]()
        files[path] = "".join(json.dumps(row) + "\n" for row in rows)
    if (cfg.reward.function or "").startswith("rewards:"):
        files["rewards.py"] = REWARDS_PY
    return files


def write_starter(stage: str, directory: Path, force: bool = False) -> list[Path]:
    """Write the starter files of ``stage`` into ``directory``; refuse to overwrite any."""
    files = {directory / name: text for name, text in planned_files(stage).items()}
    # the same data file of another stage's starter (init sft, then init grpo) is no conflict
    taken = [str(p) for p, text in files.items() if p.exists() and p.read_text() != text]
    if taken and not force:
        raise UserError(
            f"would overwrite {', '.join(taken)}; choose another directory or pass --force",
            where="init",
        )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
