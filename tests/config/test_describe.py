"""``--help-config``: generated from the schema, every field with type, default, description."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from placerl.cli import build_parser, main
from placerl.config.describe import iter_fields, render, type_name
from placerl.config.schema import RunConfig


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Walked independently of describe.py: every field that is not itself a section."""
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_field_appears_with_type_default_and_description():
    text = render(RunConfig)
    docs = {d.key: d for d in iter_fields(RunConfig)}
    expected = _leaf_keys(RunConfig)
    assert len(expected) > 100  # the whole schema, not one section
    assert expected <= set(docs)
    for key in expected:
        doc = docs[key]
        assert doc.description.strip(), f"{key} has no description"
        assert f"  {key}: {doc.type} = {doc.default}\n" in text
    for section in ("[top level]", "[model]", "[trainer]", "[placement]", "[staleness]"):
        assert section in text
    # a dict of sections lists the inner fields too
    assert "placement.roles.<actor|rollout|critic|reward|reference>.dp_size" in docs


def test_types_and_defaults_read_like_yaml():
    docs = {d.key: d for d in iter_fields(RunConfig)}
    assert docs["model.precision"].type == "fp32 | bf16"
    assert docs["optim.grad_clip"].type == "float | null"
    assert docs["optim.grad_clip"].default == "1.0"
    assert docs["trainer.report_to"].default == '["tensorboard"]'
    assert docs["reward.function"].default == "null"
    assert docs["stage"].default == "(required)"
    assert type_name(list[str]) == "list[str]"


@pytest.mark.parametrize(
    "argv", [["train", "--help-config"], ["--help-config"], ["train", "--help-config", "trainer"]]
)
def test_cli_prints_the_reference_without_a_config_file(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "trainer.report_to: list[tensorboard | wandb]" in out
    if argv[-1] == "trainer":
        assert "optim.lr" not in out
    else:
        assert "optim.lr: float = 1e-05" in out and "placement.device" in out


def test_unknown_section_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help-config", "nope"])
    assert exit_.value.code == 2
    assert "no section 'nope'" in capsys.readouterr().err


def test_help_describes_the_reversal_demo():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # noqa: SLF001

    def flat(p) -> str:  # argparse wraps to the terminal width
        return " ".join(p.format_help().replace("-\n", "-").split())

    text, demo = flat(parser), flat(sub["demo"])
    assert "reversal" in text and "reversal" in demo
    assert "digit-reversal" in demo
    for help_text in (text, demo, flat(sub["train"]), flat(sub["make-model"])):
        assert "addition" not in help_text
    assert "--help-config" in text and "--help-config" in flat(sub["train"])


def test_report_to_and_the_older_tensorboard_switch():
    from placerl.config import load_config

    def report_to(*overrides: str) -> list[str]:
        return load_config(None, ["stage=sft", *overrides], RunConfig).trainer.report_to

    assert report_to() == ["tensorboard"]
    assert report_to("trainer.report_to=[wandb, tensorboard, wandb]") == ["wandb", "tensorboard"]
    assert report_to("trainer.report_to=[]") == []
    assert report_to("trainer.tensorboard=false") == []
    assert report_to("trainer.tensorboard=true", "trainer.report_to=[wandb]") == [
        "tensorboard",
        "wandb",
    ]
    from placerl.errors import UserError

    with pytest.raises(UserError, match="report_to"):
        report_to("trainer.report_to=[mlflow]")
