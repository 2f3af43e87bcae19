"""An offline trainer's optimizer state is keyed by parameter index under every sharding: the
FSDP ranks turn their name-keyed full state into the one-process format and back, so a run
resumes under another sharding (``strategy: auto`` re-plans between them)."""

from __future__ import annotations

import torch

from placerl.runtime.ray.offline_ranks import by_index, by_name


def _trained(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # a frozen parameter is not the optimizer's
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if n == "2.bias"]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}])
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()
    return model, optimizer


def test_names_and_indices_round_trip():
    for seed in range(20):
        model, optimizer = _trained(seed)
        state = optimizer.state_dict()
        named = by_name(state, model, optimizer)
        assert set(named["state"]) == {"0.weight", "2.weight", "2.bias"}
        assert [g["params"] for g in named["param_groups"]] == [
            ["0.weight", "2.weight"],
            ["2.bias"],
        ]
        back = by_index(named, model, optimizer)
        assert back["param_groups"] == state["param_groups"]
        assert back["state"].keys() == state["state"].keys()
        for i, moments in state["state"].items():
            for key, value in moments.items():
                assert torch.equal(back["state"][i][key], value)
        assert by_name(named, model, optimizer) is named  # a name-keyed state passes
        optimizer.load_state_dict(by_index(by_name(state, model, optimizer), model, optimizer))
