"""Checkpoint lifecycle: pruning, leftovers, export, metrics, fallback and config checks."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from placerl import atomic_dirs
from placerl.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint
from placerl.cli import main
from tests.conftest import fast_overrides

DEAD_PID = 2**22 + 12345  # above the default pid_max: never a live process


@pytest.fixture
def cli(capsys, tmp_path, tiny_model_dir):
    """``cli(*extra, steps=n)`` runs ``placerl train`` on the tiny model; returns (code, err)."""
    config = tmp_path / "c.yaml"
    config.write_text("stage: sft\n")
    run_dir = tmp_path / "run"

    def run(*extra, steps=3, stage="sft"):
        overrides = fast_overrides(tiny_model_dir, run_dir, stage, steps)
        code = main(["train", str(config), *overrides, *extra])
        return code, capsys.readouterr().err

    run.run_dir = run_dir
    return run


def _policy(path):
    return load_file(path / "model.safetensors")


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _steps_logged(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]


def test_pruning_renames_out_of_the_namespace_before_deleting(
    tiny_model_dir, tmp_path, monkeypatch
):
    from placerl.models.loading import load_policy, load_tokenizer

    tok, model = load_tokenizer(tiny_model_dir), load_policy(tiny_model_dir)
    save_checkpoint(tmp_path, 1, {"policy": model}, tok, {})
    save_checkpoint(tmp_path, 2, {"policy": model}, tok, {})

    def killed(path):  # a kill in the middle of deleting the pruned checkpoint
        next(path.rglob("*.safetensors")).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_dirs, "_delete", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, {"policy": model}, tok, {}, keep=2)
    monkeypatch.undo()
    for _, path in list_checkpoints(tmp_path):  # every step_* still complete
        read_checkpoint(path, ["policy"])
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    (trash,) = [p for p in tmp_path.iterdir() if p.name.startswith(".trash-step_000001")]
    trash.rename(tmp_path / f".trash-step_000001-{DEAD_PID}")  # as if another, dead process
    notes = atomic_dirs.clean_leftovers(tmp_path)
    assert (
        len(notes) == 1
        and "removed" in notes[0]
        and sorted(os.listdir(tmp_path))
        == [
            "step_000002",
            "step_000003",
        ]
    )


def test_leftovers_of_dead_processes_are_removed_and_said(cli):
    assert cli()[0] == 0
    ckpts = cli.run_dir / "checkpoints"
    dead = [ckpts / f".tmp-step_000004-{DEAD_PID}", cli.run_dir / f".tmp-policy-{DEAD_PID}"]
    alive = ckpts / f".tmp-step_000005-{os.getppid()}"  # a live process's write: left alone
    for path in [*dead, alive]:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"partial")
    torn = cli.run_dir / ".metrics.jsonl.k1ll3d.tmp"  # a metrics rewrite killed mid-way
    torn.write_text('{"step": 1')
    code, err = cli("trainer.steps=4", "--resume")
    assert code == 0 and not torn.exists()
    for path in dead:
        assert not path.exists() and f"removed {path}" in err
    assert alive.exists()


def test_export_swaps_the_old_directory_out_by_rename(tmp_path, monkeypatch):
    target = tmp_path / "policy"
    for version, exchange in (("v1", True), ("v2", True), ("v3", False)):
        if not exchange:  # the portable path: old aside, new in, old deleted
            monkeypatch.setattr(atomic_dirs, "_exchange", lambda a, b: False)
        new = atomic_dirs.temp_name(target, "tmp")
        new.mkdir()
        (new / "w").write_text(version)
        atomic_dirs.replace(new, target)
        assert (target / "w").read_text() == version and os.listdir(tmp_path) == ["policy"]

    # a kill between the portable path's two renames: .old-policy is put back at next start
    old = tmp_path / f".old-policy-{DEAD_PID}"
    target.rename(old)
    tmp = tmp_path / f".tmp-policy-{DEAD_PID}"
    tmp.mkdir()
    notes = atomic_dirs.clean_leftovers(tmp_path)
    assert (target / "w").read_text() == "v3" and os.listdir(tmp_path) == ["policy"]
    assert any("restored" in n for n in notes)


def test_resume_after_kill_before_first_checkpoint_logs_step_0_once(cli, monkeypatch):
    import placerl.trainer

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(placerl.trainer, "save_stage", killed)  # the first save is killed
    assert cli("trainer.save_every=0")[0] == 130  # step 0 eval and steps 1-3 logged, no ckpt
    monkeypatch.undo()
    code, err = cli("trainer.save_every=0", "--resume")
    assert code == 0 and "no checkpoint" in err and "starting fresh" in err
    assert _steps_logged(cli.run_dir) == [0, 1, 2, 3]


def test_resume_of_a_new_run_dir_starts_without_a_notice(cli):
    code, err = cli("--resume")  # the demo resumes every stage, the first time too
    assert code == 0 and "no checkpoint" not in err


@pytest.mark.parametrize("damaged", ["policy/model.safetensors", "trainer_state.safetensors"])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(cli, tmp_path, damaged):
    assert cli(steps=4)[0] == 0
    straight = _policy(cli.run_dir / "policy")
    for name in ("policy", "metrics.jsonl"):
        atomic_dirs.remove(cli.run_dir / name)
    newest = cli.run_dir / "checkpoints" / "step_000004"
    data = (newest / damaged).read_bytes()
    (newest / damaged).write_bytes(data[: len(data) // 3])  # truncated
    code, err = cli("--resume", steps=4)
    assert code == 0 and "skipping checkpoint step_000004" in err and damaged.split("/")[-1] in err
    assert "resuming from step_000003" in err and "moved the unreadable step_000004" in err
    assert _equal(_policy(cli.run_dir / "policy"), straight)
    ckpts = cli.run_dir / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [3, 4] and (
        ckpts / "damaged-step_000004"
    ).is_dir()
    read_checkpoint(ckpts / "step_000004", ["policy"])  # written again, whole


def test_rotation_never_counts_a_damaged_newer_checkpoint(cli):
    import shutil

    assert cli()[0] == 0
    ckpts = cli.run_dir / "checkpoints"
    shutil.copytree(ckpts / "step_000003", ckpts / "step_000009")
    (ckpts / "step_000009" / "policy" / "model.safetensors").write_bytes(b"\0" * 10)
    code, err = cli("trainer.keep_checkpoints=1", "--resume", steps=4)
    assert code == 0 and "skipping checkpoint step_000009" in err
    # the damaged step 9 would otherwise be "the newest" and rotate step 4 away
    assert [s for s, _ in list_checkpoints(ckpts)] == [4]
    assert (ckpts / "damaged-step_000009").is_dir()


def test_resume_of_a_finished_run_keeps_the_export(cli):
    assert cli()[0] == 0
    before = _policy(cli.run_dir / "policy")
    code, err = cli("trainer.keep_checkpoints=1", "--resume")  # as after a kill mid-prune
    assert code == 0 and _equal(_policy(cli.run_dir / "policy"), before)
    assert [s for s, _ in list_checkpoints(cli.run_dir / "checkpoints")] == [3]
    assert not [name for name in os.listdir(cli.run_dir) if name.startswith(".")]


def test_resume_with_a_changed_config_is_refused_unless_allowed(cli):
    assert cli()[0] == 0
    saved = (cli.run_dir / "config.yaml").read_text()
    code, err = cli("optim.lr=0.01", "data.num_eval=4", "--resume", steps=4)
    assert code == 2 and "optim.lr: 0.001 → 0.01" in err and "data.num_eval: 8 → 4" in err
    assert "--allow-config-change" in err and "Traceback" not in err
    assert (cli.run_dir / "config.yaml").read_text() == saved
    assert list_checkpoints(cli.run_dir / "checkpoints")[-1][0] == 3  # nothing trained

    code, err = cli("trainer.eval_every=2", "trainer.keep_checkpoints=3", "--resume", steps=4)
    assert code == 0, err  # how long, how often to evaluate/save: allowed
    code, err = cli("optim.lr=0.01", "--resume", "--allow-config-change", steps=5)
    assert code == 0 and "optim.lr" in err
    assert "lr: 0.01" in (cli.run_dir / "config.yaml").read_text()


def test_config_is_kept_when_the_stage_fails_to_build(cli):
    assert cli()[0] == 0
    saved = (cli.run_dir / "config.yaml").read_text()
    code, err = cli("data.train=/no/such.jsonl", "--resume", "--allow-config-change", steps=4)
    assert code == 2 and "Traceback" not in err
    assert (cli.run_dir / "config.yaml").read_text() == saved


def test_resuming_with_another_stage_is_one_clear_error(cli):
    assert cli()[0] == 0
    code, err = cli("--resume", stage="rm")
    assert code == 2 and "holds a 'sft' run" in err and "stage 'rm'" in err
    code, err = cli("--resume", "--allow-config-change", stage="rm")  # not a config change
    assert code == 2 and "holds a 'sft' run" in err and "Traceback" not in err
