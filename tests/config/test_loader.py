"""The config loader: YAML + overrides in, a validated model or one clear UserError out."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from placerl.config import dump_config, load_config, parse_overrides
from placerl.errors import UserError


class Optim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(1e-5, gt=0)
    name: Literal["adam", "sgd"] = "adam"
    betas: list[float] = [0.9, 0.99]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    layers: int = Field(2, gt=0)


class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Model
    optim: Optim = Optim()
    seed: int = 0
    tags: list[str] = []
    note: str | None = None


VALID = """\
model:
  path: tiny
  layers: 4
optim:
  learning_rate: 0.001
  name: sgd
seed: 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def load_error(path: Path | None, overrides: list[str] = ()) -> UserError:
    with pytest.raises(UserError) as info:
        load_config(path, list(overrides), Cfg)
    return info.value


def test_valid_file_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, VALID), ["optim.learning_rate=0.5", "seed=7"], Cfg)
    assert cfg.model == Model(path="tiny", layers=4)
    assert cfg.optim.name == "sgd"
    assert cfg.optim.learning_rate == 0.5
    assert cfg.seed == 7


def test_no_file_only_overrides_create_nested_keys():
    cfg = load_config(None, ["model.path=gpt2", "model.layers=8", "optim.betas=[0.5,0.6]"], Cfg)
    assert cfg.model.path == "gpt2" and cfg.model.layers == 8
    assert cfg.optim.betas == [0.5, 0.6]


def test_override_values_are_parsed_as_yaml():
    parsed = parse_overrides(
        ["a.b=3", "x=[1,2]", "name=foo", "flag=true", "key=null", "f=1e-3", "s='3'", "e="]
    )
    assert parsed == {
        "a.b": 3,
        "x": [1, 2],
        "name": "foo",
        "flag": True,
        "key": None,
        "f": "1e-3",  # YAML 1.1: no dot, so a string; pydantic coerces it for float fields
        "s": "3",
        "e": "",
    }
    assert parse_overrides(["a=1", "a=2"]) == {"a": 2}
    assert parse_overrides(["url=http://x?a=b"]) == {"url": "http://x?a=b"}


def test_float_override_without_dot_still_validates():
    cfg = load_config(None, ["model.path=m", "optim.learning_rate=1e-3"], Cfg)
    assert cfg.optim.learning_rate == pytest.approx(1e-3)


@pytest.mark.parametrize("bad", ["seed", "=3", "a..b=1", "x=[1,2"])
def test_malformed_override_names_it(bad):
    with pytest.raises(UserError) as info:
        parse_overrides([bad])
    assert repr(bad)[1:-1] in info.value.message
    assert info.value.where == "override"


def test_override_through_a_scalar_is_an_error(tmp_path):
    err = load_error(write(tmp_path, VALID), ["seed.value=1"])
    assert "'seed' holds 3, not a mapping" in err.message


def test_unknown_key_suggests_and_gives_line(tmp_path):
    text = VALID.replace("learning_rate: 0.001", "lerning_rate: 0.001")
    err = load_error(write(tmp_path, text))
    assert "optim.lerning_rate" in err.message
    assert "did you mean 'learning_rate'?" in err.message
    assert err.where == f"{tmp_path / 'cfg.yaml'}:5"


def test_unknown_key_without_near_miss_lists_valid_keys(tmp_path):
    err = load_error(write(tmp_path, VALID + "zzz: 1\n"))
    assert "zzz: unknown key; valid keys here: model, note, optim, seed, tags" in err.message


def test_unknown_key_from_override_says_so(tmp_path):
    err = load_error(write(tmp_path, VALID), ["model.layer=3"])
    assert "model.layer" in err.message and "did you mean 'layers'?" in err.message
    assert err.where == "override"


def test_wrong_type_names_key_value_and_line(tmp_path):
    err = load_error(write(tmp_path, VALID.replace("layers: 4", "layers: four")))
    assert "model.layers" in err.message and "'four'" in err.message
    assert err.where.endswith("cfg.yaml:3")


def test_range_and_choice_violations_are_listed_together(tmp_path):
    text = VALID.replace("0.001", "-1").replace("name: sgd", "name: adamw")
    err = load_error(write(tmp_path, text))
    assert "2 problems" in err.message
    assert "optim.learning_rate: Input should be greater than 0 (got -1)" in err.message
    assert "optim.name" in err.message and "'adamw'" in err.message
    assert "cfg.yaml:5)" in err.message and "cfg.yaml:6)" in err.message


def test_missing_required_key_points_at_parent(tmp_path):
    err = load_error(write(tmp_path, VALID.replace("  path: tiny\n", "")))
    assert "model.path: required key is missing" in err.message
    assert err.where.endswith("cfg.yaml:1")


def test_list_item_error_points_at_item_line(tmp_path):
    err = load_error(write(tmp_path, VALID + "tags:\n  - a\n  - [b]\n"))
    assert "tags.1" in err.message
    assert err.where.endswith("cfg.yaml:10")


def test_yaml_syntax_error_reports_line_and_column(tmp_path):
    err = load_error(write(tmp_path, "model:\n  path: tiny\n  layers: [1, 2\nseed: 3\n"))
    assert "invalid YAML" in err.message
    path, line, column = err.where.rsplit(":", 2)
    assert path.endswith("cfg.yaml") and int(line) in (3, 4) and int(column) >= 1


def test_duplicate_key_is_an_error(tmp_path):
    err = load_error(write(tmp_path, VALID + "seed: 4\n"))
    assert "duplicate key 'seed'" in err.message and "line 7" in err.message
    assert err.where.endswith("cfg.yaml:8")


def test_missing_file_is_named(tmp_path):
    err = load_error(tmp_path / "nope.yaml")
    assert "not found" in err.message and "nope.yaml" in err.message


def test_top_level_must_be_a_mapping(tmp_path):
    err = load_error(write(tmp_path, "- a\n- b\n"))
    assert "mapping" in err.message and "list" in err.message


def test_empty_file_means_all_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""), ["model.path=x"], Cfg)
    assert cfg.seed == 0 and cfg.optim == Optim()


def test_dump_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, VALID), [], Cfg)
    assert Cfg.model_validate(yaml.safe_load(dump_config(cfg))) == cfg


# --- choices that exclude each other (reward.function | reward.model) -----------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_override_of_reward_model_replaces_the_files_reward_function():
    from placerl.config.schema import RunConfig

    cfg = load_config(EXAMPLES / "ppo.yaml", ["reward.model=runs/rm/reward_model"], RunConfig)
    assert cfg.reward.model == "runs/rm/reward_model" and cfg.reward.function is None
    cfg = load_config(EXAMPLES / "ppo_interleave.yaml", ["reward.function=m:f"], RunConfig)
    assert cfg.reward.function == "m:f" and cfg.reward.model is None
    cfg = load_config(EXAMPLES / "ppo.yaml", ["reward.model=null"], RunConfig)  # null clears
    assert cfg.reward.function == "examples.rewards:digits_match"  # nothing else


def test_both_reward_sources_overridden_is_still_an_error():
    from placerl.config.schema import RunConfig

    with pytest.raises(UserError, match="not both"):
        load_config(EXAMPLES / "ppo.yaml", ["reward.model=d", "reward.function=m:f"], RunConfig)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_seed_outside_the_generators_range(seed):
    from placerl.config.schema import RunConfig

    with pytest.raises(UserError, match="seed") as err:
        load_config(None, ["stage=sft", f"seed={seed}"], RunConfig)
    assert err.value.where == "override"


def test_an_override_inside_a_null_section_turns_it_on(tmp_path):
    """``placerl init`` writes ``lora: null``; ``model.lora.r=8`` on the command line (the
    README's way to train adapters) sets that section, as it does where the file is silent."""
    from placerl.config.schema import RunConfig

    path = tmp_path / "sft.yaml"
    path.write_text("stage: sft\nmodel:\n  lora: null\n")
    assert load_config(path, [], RunConfig).model.lora is None
    cfg = load_config(path, ["model.lora.r=8"], RunConfig)
    assert cfg.model.lora is not None and cfg.model.lora.r == 8
