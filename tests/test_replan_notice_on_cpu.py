"""After an internal re-plan the run resumes under the new Plan's settings by design: the
config-change notice names the re-plan, not a ``--allow-config-change`` the user never gave."""

from __future__ import annotations

import io

from rich.console import Console

import placerl.trainer as trainer
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.placement.auto.replan import Replan
from tests.conftest import fast_overrides


def test_a_replan_resume_names_the_replan_not_the_flag(tiny_model_dir, tmp_path, monkeypatch):
    def cfg(steps, *extra):
        overrides = [*fast_overrides(tiny_model_dir, tmp_path, "sft", steps), *extra]
        return load_config(None, overrides, RunConfig)

    trainer.train(cfg(1))  # a checkpoint at step 1, as a re-plan leaves one
    run_stage, calls = trainer._run_stage, []

    def replan_once(*args):
        if not calls:
            calls.append(1)  # the planner's new settings change the training (here: the lr)
            raise Replan(cfg(2, "optim.lr=2e-3"), "re-planned")
        return run_stage(*args)

    monkeypatch.setattr(trainer, "_run_stage", replan_once)
    out = io.StringIO()
    trainer.train(cfg(2), resume=True, console=Console(file=out, width=300))
    log = " ".join(out.getvalue().split())
    assert "resuming with a changed config (the re-plan's settings): optim.lr" in log
    assert "--allow-config-change" not in log
