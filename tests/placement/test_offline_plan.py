"""The planner plans the offline stages (issue 22): sft, rm and dpo as an update on fixed
examples (and dpo's reference forward), candidates local and Flatten over ``dp`` of the slots
× sharding × micro-batch × checkpointing; ``plan --auto`` explains the pick in the settings'
words, on this machine and on paper."""

from __future__ import annotations

import json

import pytest

from placerl.cli import main
from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.placement.auto.plan import run_search
from placerl.placement.cost.hardware import engine_spec, parse_cluster, spec_cluster
from placerl.placement.cost.machine import CPU_DEFAULT, from_spec
from placerl.placement.cost.offline import example_lengths, reference_share
from placerl.placement.cost.phases import step_phases
from placerl.placement.cost.workload import workload_from_config
from placerl.placement.plan.cluster import local_slot
from placerl.placement.plan.plan import Cluster, DeviceSlot, Sharding
from placerl.placement.search.enumerate import Candidate, candidates, micro_batches
from placerl.placement.search.search import search
from placerl.types import Role

OFFLINE = ("sft", "rm", "dpo")


def _cfg(stage: str, *overrides: str) -> RunConfig:
    # a run_dir with no base_model: model.path null reads no tokenizer (the fallback lengths)
    base = [f"stage={stage}", "placement.device=cpu", "run_dir=/nonexistent/placerl-run"]
    return load_config(None, [*base, *overrides], RunConfig)


def _cpu_cluster(n: int) -> Cluster:
    memory = local_slot("cpu").memory_bytes
    return Cluster(tuple(DeviceSlot("cpu", i, 0, 1, memory) for i in range(n)))


def _yaml(tmp_path) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\n")
    return str(path)


@pytest.mark.parametrize("stage", OFFLINE)
def test_an_offline_step_is_an_update_on_the_batch(stage):
    cfg = _cfg(stage, "trainer.batch_size=8", "data.max_len=64")
    w = workload_from_config(cfg)
    assert w.offline and Role.ROLLOUT not in w.roles
    rows = {"sft": 8, "rm": 16, "dpo": 16}[stage]  # a pair is two rows
    assert w.rows == rows
    assert w.unit_rows == (1 if stage == "sft" else 2)
    assert w.shapes[Role.ACTOR].scalar_head == (stage == "rm")
    assert (Role.REFERENCE in w.roles) == (stage == "dpo")
    plan = candidates(w, _cpu_cluster(2)).__next__().plan
    names = [p.name for p in step_phases(plan, w, CPU_DEFAULT)]
    assert names == (["reference"] if stage == "dpo" else []) + ["update", "controller"]


def test_the_mean_lengths_are_the_data_s(tiny_model_dir):
    """Read through the stage's own encoding (prompt with BOS, response with EOS), cut to
    ``data.max_len``; a quarter of it each when the tokenizer cannot be read."""
    from placerl.data.examples import encode_sft
    from placerl.models.loading import load_tokenizer
    from placerl.tasks.reversal import ReversalTask

    cfg = _cfg("sft", f"model.path={tiny_model_dir}", "data.train=builtin", "data.max_len=12")
    tokenizer = load_tokenizer(tiny_model_dir)
    rows = ReversalTask().sft_rows(64, seed=cfg.seed)
    examples = encode_sft(tokenizer, [(r["prompt"], r["completion"]) for r in rows], 12)
    prompt, response = example_lengths(cfg)
    assert prompt == pytest.approx(sum(len(e.prompt) for e in examples) / 64)
    assert response == pytest.approx(sum(len(e.completion) for e in examples) / 64)
    assert prompt + response <= 12
    assert example_lengths(_cfg("sft", "data.max_len=40")) == (10, 10)


@pytest.mark.parametrize(
    ("overrides", "share"),
    [
        (["preference.reference=online"], 1.0),
        (["data.builtin_size=4000", "trainer.steps=100", "trainer.batch_size=32"], 1.0),
        (["data.builtin_size=400", "trainer.steps=100", "trainer.batch_size=32"], 0.125),
    ],
)
def test_a_cached_reference_runs_in_the_first_epoch_only(overrides, share):
    cfg = _cfg("dpo", "data.train=builtin", *overrides)
    assert reference_share(cfg) == pytest.approx(share)
    w = workload_from_config(cfg)
    plan = next(candidates(w, _cpu_cluster(2))).plan
    every = {
        p.name: p.seconds for p in step_phases(plan, w.with_(reference_share=1.0), CPU_DEFAULT)
    }
    phases = {p.name: p.seconds for p in step_phases(plan, w, CPU_DEFAULT)}
    assert phases["reference"] == pytest.approx(share * every["reference"])
    assert phases["update"] == every["update"]


@pytest.mark.parametrize("stage", OFFLINE)
@pytest.mark.parametrize("slots", [1, 2, 4, 8])
def test_candidates_are_flatten_over_dp_slots_with_every_sharding(stage, slots):
    """One trainer rank per slot of the Plan (the offline runtime starts one per slot): a
    smaller dp is Flatten over fewer slots; no rollout, no generation waves, no offload; a
    pair's two rows stay in one micro-batch."""
    w = workload_from_config(_cfg(stage, "trainer.batch_size=16"))
    seen = set()
    for c in candidates(w, _cpu_cluster(slots)):
        plan, actor = c.plan, c.plan.roles[Role.ACTOR]
        assert plan.strategy == "flatten" and actor.dp_size == len(plan.slots)
        assert all(p.dp_size == actor.dp_size for p in plan.roles.values())
        assert f"dp={actor.dp_size}" in c.name
        if c.micro_batch is not None:
            assert c.micro_batch % w.unit_rows == 0
        seen.add((actor.dp_size, actor.sharding, actor.shard_size))
    dps = {d for d in range(1, slots + 1) if slots % d == 0}
    assert {d for d, _, _ in seen} == dps
    assert any(s == Sharding.FULL for _, s, _ in seen) == (slots > 1)
    ranked = search(w, _cpu_cluster(slots), CPU_DEFAULT).ranked
    assert ranked and all(not s.candidate.offload and s.candidate.gen_waves == 1 for s in ranked)


@pytest.mark.parametrize("rows", [2, 6, 16, 34, 64])
def test_pair_micro_batches_are_even(rows):
    w = workload_from_config(_cfg("dpo", f"trainer.batch_size={rows // 2}"))
    sizes = micro_batches(w, 1)
    assert sizes[0] is None
    assert all(s % 2 == 0 and 2 <= s < rows for s in sizes[1:])


def _paper(stage: str, *overrides: str):
    cfg = _cfg(stage, "data.max_len=2048", "trainer.batch_size=64", *overrides)
    return run_search(cfg, "8xH100", None, "7B")


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_7b_on_8xh100_is_sharded_data_parallel_over_every_gpu(stage):
    result, w = _paper(stage)
    pick = result.pick
    actor = pick.candidate.plan.roles[Role.ACTOR]
    assert actor.dp_size == 8 and actor.sharding != Sharding.NONE
    # unsharded, the 7B's 16 bytes a parameter fit no 80 GB GPU: named, not picked
    count, spec = parse_cluster("8xH100")
    m = from_spec(spec, engine_spec("placerl"))
    plan = next(c.plan for c in candidates(w, spec_cluster(count, spec)))
    assert plan.roles[Role.ACTOR].sharding == Sharding.NONE
    from placerl.placement.search.search import score

    assert not score(Candidate(plan, 1, True), w, m).feasible


def test_long_sequences_get_micro_batches_then_checkpointing():
    """The memory model decides: longer rows shrink the micro-batch, and where even one row's
    activations do not fit, gradient checkpointing is turned on."""
    picks = [_paper("sft", f"data.max_len={n}")[0].pick.candidate for n in (2048, 8192, 32768)]
    short, middle, long = picks
    assert short.micro_batch is None and not short.checkpointing
    assert middle.micro_batch is not None and not middle.checkpointing
    assert long.checkpointing


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_the_paper_plan_prints_its_settings(stage, tmp_path, capsys):
    args = ["plan", "--auto", "--cluster", "8xH100", "--model-size", "7B"]
    rc = main(
        [*args, _yaml(tmp_path), f"stage={stage}", "data.max_len=2048", "trainer.batch_size=64"]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0, out
    assert "data-parallel size 8, sharding full" in out or "sharding hybrid" in out
    assert "micro-batch" in out and "gradient checkpointing o" in out
    assert "s a step" in out and "GB per device" in out
    assert "auto: trainer.micro_batch_size = " in out
    assert "auto: model.gradient_checkpointing = " in out


@pytest.mark.parametrize("stage", OFFLINE)
def test_plan_auto_here_picks_and_explains(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLACERL_PROFILE_DIR", str(tmp_path / "profiles"))
    overrides = [f"stage={stage}", "placement.device=cpu", "placement.num_workers=2"]
    overrides += ["placement.threads_per_worker=1", "trainer.batch_size=4"]
    assert main(["plan", "--auto", "--no-profile", _yaml(tmp_path), *overrides]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"workload: {stage}" in out and "pick: " in out and "data-parallel size" in out
    assert main(["plan", "--auto", "--no-profile", "--json", _yaml(tmp_path), *overrides]) == 0
    found = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in found["candidates"]]
    assert "local" in names and any(n.startswith("flatten dp=2") for n in names)
    assert all("gen=" not in n and "waves" not in n for n in names)


@pytest.mark.parametrize("stage", ["sft", "dpo", "grpo"])
def test_a_lora_run_is_planned_with_its_rank(stage):
    """``model.lora.r`` (the planner read a ``rank`` the section does not have, and failed)."""
    cfg = _cfg(stage, "model.lora.r=4", "rollout.samples_per_prompt=2")
    assert workload_from_config(cfg).lora_rank == 4
