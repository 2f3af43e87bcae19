"""Non-finite values never reach the weights of a checkpoint or an export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from placerl.checkpoint import list_checkpoints, save_checkpoint
from placerl.cli import main
from placerl.errors import UserError
from placerl.numerics import BadStepCounter, finite_step, pop_skipped
from tests.conftest import fast_overrides


def _model_with_grads(grad_value: float):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.full_like(p, grad_value)
    return model, optimizer


@pytest.mark.parametrize("grad,loss", [(float("nan"), None), (float("inf"), None), (1.0, "nan")])
def test_non_finite_step_is_skipped_and_counted(grad, loss):
    pop_skipped()
    model, optimizer = _model_with_grads(grad)
    before = [p.detach().clone() for p in model.parameters()]
    loss_value = torch.tensor(float(loss)) if loss else None
    norm = finite_step(list(model.parameters()), optimizer, 1.0, loss_value)
    assert norm != norm or norm == float("inf")  # NaN or inf: the metric shows the skip
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert pop_skipped() == 1 and pop_skipped() == 0


def test_finite_step_steps():
    model, optimizer = _model_with_grads(1.0)
    before = [p.detach().clone() for p in model.parameters()]
    assert finite_step(
        list(model.parameters()), optimizer, 1.0, torch.tensor(2.0)
    ) == pytest.approx(6**0.5)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert pop_skipped() == 0


def test_bad_steps_must_be_consecutive():
    counter = BadStepCounter(2)
    counter.update(1, 1, None)
    counter.update(2, 0, None)  # a good step resets the count
    counter.update(3, 1, None)
    with pytest.raises(UserError, match="steps 3-4: 2 consecutive"):
        counter.update(4, 2, "step_000002")


def test_non_finite_weights_are_never_written(tiny_model_dir, tmp_path):
    from placerl.models.loading import load_policy, load_tokenizer

    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    save_checkpoint(tmp_path, 1, {"policy": model}, tok, {}, keep=1)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(UserError, match="not finite"):
        save_checkpoint(tmp_path, 2, {"policy": model}, tok, {}, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]  # rotation kept the good one
    assert [p.name for p in tmp_path.iterdir()] == ["step_000001"]  # no temporary left


def _all_finite(directory) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for f in directory.rglob("*.safetensors")
        for t in load_file(f).values()
        if t.is_floating_point()
    )


@pytest.mark.parametrize(
    "stage,extra",
    [("sft", ()), ("grpo", ("reward.function=tests.conftest:length_reward",))],
)
def test_huge_learning_rate_stops_with_finite_checkpoints(
    capsys, tmp_path, tiny_model_dir, stage, extra
):
    run_dir = tmp_path / "run"
    (tmp_path / "c.yaml").write_text(f"stage: {stage}\n")
    overrides = fast_overrides(tiny_model_dir, run_dir, stage, steps=8)
    args = ["train", str(tmp_path / "c.yaml"), *overrides, *extra, "optim.lr=1e30"]
    args.append("trainer.keep_checkpoints=2")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "consecutive steps had a non-finite loss or gradient norm" in err
    assert "trainer.max_bad_steps" in err and "Traceback" not in err
    found = list_checkpoints(run_dir / "checkpoints")
    assert found and all(_all_finite(path) for _, path in found)
    assert not (run_dir / "policy").exists() or _all_finite(run_dir / "policy")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["train/skipped_nonfinite"] for r in records if "train/skipped_nonfinite" in r]
    assert skipped[-3:] == [1, 1, 1] and len(skipped) < 8  # stopped after max_bad_steps=3


def test_non_finite_export_is_refused_and_keeps_the_old_one(tiny_model_dir, tmp_path):
    from placerl.checkpoint import export_model
    from placerl.models.loading import load_policy, load_tokenizer

    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    export_model(model, tok, tmp_path / "policy")
    before = (tmp_path / "policy" / "model.safetensors").read_bytes()
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("inf")
    with pytest.raises(UserError, match="export"):
        export_model(model, tok, tmp_path / "policy", step=7)
    assert (tmp_path / "policy" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]
