"""Fuzz the CLI with a table of mutations: every outcome is exit 0 or 2, never a traceback,
and files that were in the run directory before are byte-identical after.

Mutations, applied to the example configs and data files a user starts from: wrong types,
unknown keys, missing and misplaced files, truncated/garbled/empty YAML and JSONL, huge
numbers, negative sizes, unicode, the wrong stage, resuming a finished run with a mutated
config. Each case runs in-process through ``placerl.cli.main`` on the tiny test model with
1 step, so the whole table stays well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from placerl.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["sft", "rm", "ppo", "grpo", "rloo", "dpo", "online_dpo", "rso", "brain"]
SHORT = [
    "trainer.steps=1",
    "trainer.batch_size=2",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.save_every=1",
    "data.num_eval=2",
    "data.builtin_size=16",
    "rollout.max_new_tokens=2",
    "rso.num_candidates=4",
    "rso.num_accepted=2",
    "brain.num_samples=2",
]

# Overrides that every stage must refuse (or accept) without running a step: validation.
OVERRIDES = {
    "steps-string": ["trainer.steps=abc"],
    "steps-list": ["trainer.steps=[1, 2]"],
    "steps-float": ["trainer.steps=1.5"],
    "steps-huge": ["trainer.steps=1e300"],
    "steps-bigint": [f"trainer.steps={10**40}"],
    "batch-negative": ["trainer.batch_size=-4"],
    "batch-zero": ["trainer.batch_size=0"],
    "lr-string": ["optim.lr=fast"],
    "lr-negative": ["optim.lr=-1e-3"],
    "lr-nan": ["optim.lr=.nan"],
    "max-len-negative": ["data.max_len=-5"],
    "max-new-tokens-huge": [f"rollout.max_new_tokens={10**12}"],
    "temperature-bool": ["rollout.temperature=true"],
    "samples-zero": ["rollout.samples_per_prompt=0"],
    "seed-negative": ["seed=-1"],
    "seed-huge": [f"seed={2**64}"],
    "unknown-key": ["trainer.stepz=3"],
    "unknown-section": ["optimizer.lr=1e-3"],
    "into-a-scalar": ["optim.lr.x=1"],
    "empty-key": ["trainer..steps=1"],
    "no-equals": ["trainer.steps"],
    "bad-yaml-value": ["trainer.steps=[1"],
    "stage-unknown": ["stage=ppo2"],
    "stage-null": ["stage=null"],
    "stage-number": ["stage=3"],
    "unicode-key": ["trainer.stéps=1"],
    "model-missing": ["model.path=/nonexistent/model"],
    "model-is-a-file": ["model.path=README.md"],
    "tokenizer-missing": ["model.tokenizer=/nonexistent/tok"],
    "data-missing": ["data.train=/nonexistent/data.jsonl"],
    "data-is-a-directory": ["data.train=examples"],
    "data-wrong-suffix": ["data.train=README.md"],
    "eval-missing": ["data.eval=/nonexistent/eval.jsonl"],
    "reward-missing-module": ["reward.function=no_such_module_xyz:f"],
    "reward-no-colon": ["reward.function=examples.rewards"],
    "reward-missing-function": ["reward.function=examples.rewards:nope"],
    "reward-model-missing": ["reward.model=/nonexistent/rm"],
    "reward-both": ["reward.function=examples.rewards:digits_match", "reward.model=/x"],
    "reference-missing": ["reference=/nonexistent/ref"],
    "placement-unknown": ["placement.strategy=sideways"],
}
# Overrides that pass validation and run (or fail later, at data, model or step).
RUNNING = {
    "unicode-run-dir": [],  # run_dir gets a unicode name below
    "stop-unicode": ["rollout.stop_strings=['ü', '→']"],
    "reward-scale-huge": ["reward.scale=1e300"],
    "max-len-2": ["data.max_len=2"],
    "max-prompt-len-1": ["data.max_prompt_len=1"],
}


def _rows(name: str) -> list[dict]:
    path = ROOT / "examples" / "data" / name
    return [json.loads(line) for line in path.read_text().splitlines()[:8]]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def data_mutations(name: str) -> dict[str, bytes]:
    """Mutated copies of an example data file (the first 8 rows)."""
    rows = _rows(name)
    text = _jsonl(rows)
    first = dict(rows[0])
    key = next(iter(first))  # prompt or messages
    other = [k for k in first if k != key]
    unicode_rows = [
        {k: f"{v} ünï→😀" if isinstance(v, str) else v for k, v in r.items()} for r in rows
    ]
    return {
        "empty": b"",
        "blank-lines": b"\n\n\n",
        "truncated-mid-line": text[: len(text) // 2 + 3].encode(),
        "truncated-mid-key": text[:5].encode(),
        "garbled-bytes": text.encode()[:40] + b"\xff\xfe\x00\x81garbage" + text.encode()[40:],
        "binary": bytes(range(256)) * 4,
        "json-array-line": (text + "[1, 2, 3]\n").encode(),
        "json-string-line": (text + '"just a string"\n').encode(),
        "json-number-line": (text + "42\n").encode(),
        "missing-column": _jsonl([{k: v for k, v in r.items() if k != key} for r in rows]).encode(),
        "missing-other-column": _jsonl([{key: r[key]} for r in rows]).encode() if other else b"",
        "null-values": _jsonl([{k: None for k in r} for r in rows]).encode(),
        "number-values": _jsonl([{k: 7 for k in r} for r in rows]).encode(),
        "list-values": _jsonl([{k: [1, 2] for k in r} for r in rows]).encode(),
        "empty-strings": _jsonl([{k: "" for k in r} for r in rows]).encode(),
        "unicode": _jsonl(unicode_rows).encode(),
        "huge-row": _jsonl([{**first, key: "9" * 100_000}] + rows[1:]).encode()
        if isinstance(first[key], str)
        else text.encode(),
        "mixed-schema": (text + json.dumps({"unexpected": 1}) + "\n").encode(),
    }


DATA_TARGETS = {  # example → (data key, file)
    "sft": ("data.train", "sft.jsonl"),
    "rm": ("data.train", "preferences.jsonl"),
    "dpo": ("data.train", "preferences.jsonl"),
    "grpo": ("data.train", "prompts.jsonl"),
    "ppo": ("data.eval", "eval_prompts.jsonl"),
}

CONFIG_TEXTS = {  # mutations of the YAML file itself
    "empty-file": lambda text: "",
    "truncated-half": lambda text: text[: len(text) // 2],
    "truncated-third": lambda text: text[: len(text) // 3],
    "garbled": lambda text: text.replace(":", "", 3),
    "tabs": lambda text: text.replace("  ", "\t"),
    "top-level-list": lambda text: "- stage: sft\n",
    "duplicate-key": lambda text: text + "\nstage: sft\n",
    "latin1-bytes": None,  # written as bytes below
}


def cases() -> list[tuple[str, str, str, object]]:
    out = []
    for example in EXAMPLES:
        out += [(f"{example}/{n}", example, "override", o) for n, o in OVERRIDES.items()]
        out += [(f"{example}/{n}", example, "running", o) for n, o in RUNNING.items()]
        out += [(f"{example}/yaml-{n}", example, "yaml", n) for n in CONFIG_TEXTS]
        out += [(f"{example}/resume-as-{s}", example, "resume", s) for s in ("sft", "grpo")]
    for example, (_, file) in DATA_TARGETS.items():
        out += [(f"{example}/data-{n}", example, "data", n) for n in data_mutations(file)]
    return out


CASES = cases()


@pytest.fixture(scope="module")
def finished_runs(tiny_model_dir, tmp_path_factory):
    """A finished sft run and a finished grpo run: what a resume case starts from."""
    base = tmp_path_factory.mktemp("finished")
    runs = {}
    for stage in ("sft", "grpo"):
        run_dir = base / stage
        argv = ["train", str(ROOT / "examples" / f"{stage}.yaml"), *_common(tiny_model_dir)]
        assert main([*argv, f"run_dir={run_dir}"]) == 0
        runs[stage] = run_dir
    return runs


def _common(model_dir) -> list[str]:
    return [f"model.path={model_dir}", *SHORT]


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _prepare(case, tmp_path: Path, model_dir, finished_runs) -> tuple[list[str], Path, bool]:
    """argv, run dir, and whether the run dir holds a finished run (only exit 2 must keep it)."""
    name, example, kind, arg = case
    config = ROOT / "examples" / f"{example}.yaml"
    run_dir = tmp_path / ("rün-→-dir" if name.endswith("unicode-run-dir") else "run")
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("the user's notes: never touched\n")
    argv = ["train", str(config), *_common(model_dir)]
    resumed = False
    if kind in ("override", "running"):
        argv += arg
    elif kind == "yaml":
        mutated = tmp_path / "config.yaml"
        if arg == "latin1-bytes":
            mutated.write_bytes(config.read_bytes() + "# caf\xe9\n".encode("latin-1"))
        else:
            mutated.write_text(CONFIG_TEXTS[arg](config.read_text()))
        argv[1] = str(mutated)
    elif kind == "resume":
        shutil.rmtree(run_dir)
        shutil.copytree(finished_runs[arg], run_dir)
        argv += ["trainer.steps=2", "--resume"]
        resumed = True
    elif kind == "data":
        key, file = DATA_TARGETS[example]
        data = tmp_path / f"mutated_{file}"
        data.write_bytes(data_mutations(file)[arg])
        argv.append(f"{key}={data}")
    argv.append(f"run_dir={run_dir}")
    return argv, run_dir, resumed


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_fuzz(case, tiny_model_dir, finished_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the examples name their data relative to the repository root
    argv, run_dir, resumed = _prepare(case, tmp_path, tiny_model_dir, finished_runs)
    before = snapshot(run_dir)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    assert code in (0, 2), f"exit {code} for {argv}\n{captured.err[-4000:]}"
    assert "Traceback" not in captured.err + captured.out, captured.err[-4000:]
    if code == 2:
        assert captured.err.strip(), "exit 2 without a message"
    after = snapshot(run_dir)
    if code == 2 or not resumed:
        changed = [f for f, data in before.items() if after.get(f) != data]
        assert not changed, f"exit {code} changed {changed} in the run directory"
