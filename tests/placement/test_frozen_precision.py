"""Plan validation counts a frozen model in the precision it is loaded in: 4 bytes a parameter
with fp32 training, 2 with bf16 (frozen models are held in the training precision)."""

from __future__ import annotations

import pytest

from placerl.config import load_config
from placerl.config.schema import RunConfig
from placerl.errors import UserError
from placerl.placement.from_config import plan_from_config
from placerl.placement.plan.plan import Cluster, DeviceSlot
from placerl.types import Role

PARAMS = 1_000_000  # actor 16 MB trained, reference 4 MB (fp32) or 2 MB (bf16) frozen


@pytest.mark.parametrize("precision,fits", [("bf16", True), ("fp32", False)])
def test_a_bf16_reference_needs_half_the_bytes_of_an_fp32_one(tmp_path, precision, fits):
    overrides = [
        "stage=grpo",
        "grpo.kl_coef=0.05",  # a reference
        "rollout.samples_per_prompt=2",
        f"run_dir={tmp_path}",
        "placement.strategy=flatten",
        f"model.precision={precision}",
    ]
    cfg = load_config(None, overrides, RunConfig)
    gpu = Cluster((DeviceSlot("gpu", 0, memory_bytes=19 * PARAMS),))  # 16 + 2 fit, 16 + 4 not
    params = {Role.ACTOR: PARAMS, Role.REFERENCE: PARAMS}
    if fits:
        plan_from_config(cfg, cluster=gpu, model_params=params)
        return
    with pytest.raises(UserError, match="needs at least") as err:
        plan_from_config(cfg, cluster=gpu, model_params=params)
    # at a small model's scale the figures are in MiB, not "0.0 GiB"
    assert "needs at least 19 MiB (actor 15 MiB, reference 4 MiB) but has 18 MiB" in str(err.value)
