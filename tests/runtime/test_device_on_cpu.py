"""``placement.device`` for every stage: resolution, the local runtime's device boundary, refusals.

No GPU here: the CUDA branch of the resolution is tested with ``torch.cuda`` patched, the rest
runs every stage with ``placement.device=cpu`` (and bf16) end to end.
"""

from __future__ import annotations

import copy

import pytest
import torch

from placerl.cli import main
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.models.device import resolve_device, to_device
from placerl.runtime.local import OnDevice
from placerl.trainer import train
from tests.conftest import fast_overrides

LENGTH_REWARD = "reward.function=tests.conftest:length_reward"
STAGES = [
    ("sft", ()),
    ("rm", ()),
    ("dpo", ()),
    ("ppo", ("ppo.minibatches=2",)),
    ("grpo", ("grpo.kl_coef=0.05", LENGTH_REWARD)),
    ("rloo", (LENGTH_REWARD,)),
    ("online_dpo", ("rollout.samples_per_prompt=2", LENGTH_REWARD)),
    ("rso", (LENGTH_REWARD,)),
    ("brain", (LENGTH_REWARD, "brain.proposal=policy")),
]


def _yaml(tmp_path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text("seed: 0\n")
    return str(path)


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError) as err:
        resolve_device("gpu")
    assert err.value.where == "placement.device" and "no CUDA device" in err.value.message


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("gpu") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit cpu wins


@pytest.mark.parametrize("stage", ["sft", "dpo", "grpo", "rso"])
def test_gpu_without_one_is_a_clear_error(tiny_model_dir, tmp_path, capsys, stage):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = ["train", _yaml(tmp_path), *fast_overrides(tiny_model_dir, tmp_path / "run", stage)]
    assert main([*args, "placement.device=gpu"]) == 2
    err = capsys.readouterr().err
    assert "placement.device" in err and "no CUDA device" in err
    assert "Traceback" not in err


def test_plan_with_gpu_without_one_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    overrides = ["stage=grpo", "rollout.samples_per_prompt=2", "placement.device=gpu"]
    assert main(["plan", _yaml(tmp_path), *overrides]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
@pytest.mark.parametrize("strategy", ["interleave", "separate"])
def test_offline_stages_refuse_a_placement_they_do_not_run(tmp_path, capsys, stage, strategy):
    """sft/rm/dpo train one model data-parallel (flatten), in one process (local) or where
    the planner puts it (auto, issue 22): a strategy that places models apart is refused,
    never silently ignored, and ``placerl plan`` prints no Plan."""
    overrides = [f"stage={stage}", f"placement.strategy={strategy}", "placement.device=cpu"]
    with pytest.raises(UserError, match="data-parallel over every slot"):
        load_config(None, overrides, RunConfig)
    assert main(["plan", _yaml(tmp_path), *overrides]) == 2
    out = capsys.readouterr()
    assert "placement.strategy: local" in out.err and "dp" not in out.out


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_offline_stages_plan_flatten(tmp_path, capsys, stage):
    overrides = [f"stage={stage}", "placement.strategy=flatten", "placement.device=cpu"]
    overrides += ["placement.num_workers=2", "placement.threads_per_worker=1"]
    assert main(["plan", _yaml(tmp_path), *overrides]) == 0
    assert "dp" in capsys.readouterr().out


class _Recorder:
    """A stand-in role: records where its arguments were, answers on its own device."""

    def __init__(self):
        self.model = torch.nn.Linear(2, 2)
        self.seen: list[torch.device] = []
        self.state = None

    def log_probs(self, batch, extra=None):
        self.seen += [batch["x"].device, extra.device]
        return {"out": torch.ones(2)}

    def load_state_dict(self, state):
        self.state = state


def test_on_device_moves_arguments_and_returns_cpu_results(monkeypatch):
    moves = []
    real = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        moves.append(args[0] if args else kwargs.get("device"))
        return real(self, *args, **kwargs)

    role = _Recorder()
    wrapped = OnDevice(role, torch.device("cpu"))
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    out = wrapped.log_probs({"x": torch.zeros(3)}, extra=torch.zeros(1))
    assert out["out"].device == torch.device("cpu") and role.seen == [torch.device("cpu")] * 2
    assert moves.count(torch.device("cpu")) == 3  # two arguments in, one result out
    moves.clear()
    state = {"generator": torch.Generator().get_state()}
    wrapped.load_state_dict(state)
    assert role.state["generator"] is state["generator"]  # restored states are not moved
    assert wrapped.model is role.model  # attributes are the role's
    twin = copy.copy(wrapped)
    twin.model = torch.nn.Linear(2, 2)  # set through the copy: the copy's role only
    assert isinstance(twin, OnDevice) and twin.role is not role and wrapped.model is role.model


def test_to_device_walks_containers_and_dataclasses():
    from placerl.algos.dpo import EncodedPair, pack_pairs

    packed = pack_pairs([EncodedPair([1, 2], [3], [4, 5])], pad_id=0)
    assert to_device(packed, "cpu") is packed  # nothing to move: the same object
    moved = to_device({"a": [torch.zeros(1), (torch.ones(1), 3)], "p": packed}, "meta")
    assert moved["a"][0].device.type == "meta" and moved["a"][1][1] == 3
    assert moved["p"].input_ids.device.type == "meta" and moved["p"].num_tokens == 5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(("stage", "extra"), STAGES)
def test_every_stage_runs_on_the_named_device(tiny_model_dir, tmp_path, stage, extra, precision):
    overrides = fast_overrides(tiny_model_dir, tmp_path / "run", stage, steps=2)
    overrides += ["placement.device=cpu", f"model.precision={precision}", *extra]
    cfg = load_config(None, overrides, RunConfig)
    metrics = train(cfg)
    assert all(v == v for v in metrics.values())  # finite enough to compare: no NaN
    saved = tmp_path / "run" / ("reward_model" if stage == "rm" else "policy")
    assert (saved / "config.json").exists()
