"""Shared fixtures: a tiny Llama + tokenizer on disk, and configs that run in seconds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama (≈30k parameters) with the built-in tokenizer."""
    from placerl.models.factory import TinyLlamaSize, make_model_dir
    from placerl.stages.sources import builtin_corpus

    path = tmp_path_factory.mktemp("tiny") / "model"
    return make_model_dir(path, builtin_corpus(), TinyLlamaSize(**TINY), seed=0)


def fast_overrides(model_dir, run_dir, stage: str, steps: int = 3) -> list[str]:
    """Overrides that make any stage run in a couple of seconds on the tiny model."""
    out = [
        f"stage={stage}",
        f"run_dir={run_dir}",
        f"model.path={model_dir}",
        "data.builtin_size=64",
        "data.num_eval=8",
        f"trainer.steps={steps}",
        "trainer.batch_size=4",
        "trainer.progress=false",
        "trainer.report_to=[]",
        "trainer.save_every=1",
        "rollout.max_new_tokens=4",
        "optim.lr=1e-3",
    ]
    if stage in ("grpo", "rloo"):
        out.append("rollout.samples_per_prompt=2")
    return out


def length_reward(completions: list[str], **_) -> list[float]:
    """A reward with signal even for a random model: longer completions score higher."""
    return [float(len(c)) for c in completions]


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.sweep`` cases (a further stage or kill point on a path another case of
    the same test already takes) run with ``PLACERL_SWEEP=1``: the CI budget (25 minutes on 2
    cores) holds the rest, and every test function keeps at least one case in CI."""
    if os.environ.get("PLACERL_SWEEP") == "1":
        return
    skip = pytest.mark.skip(reason="a further case of a covered path: PLACERL_SWEEP=1 runs it")
    for item in items:
        if item.get_closest_marker("sweep"):
            item.add_marker(skip)
