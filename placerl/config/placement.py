"""The ``placement:`` section: which strategy places the roles, on what cluster.

``placerl plan CONFIG`` prints the Plan this section gives (``placerl.placement.from_config``).
The field types are plain literals on purpose: this module is imported by the config schema,
and must not import the placement package (which imports the schema to read stages).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from placerl.config.section import Section

RoleName = Literal["actor", "rollout", "critic", "reward", "reference"]
ShardingName = Literal["none", "full", "hybrid"]


class RolePlacementConfig(Section):
    """One role of a ``custom`` placement: ``roles: {actor: {group: g0, dp_size: 2}}``, or
    just the group (``roles: {reward: g1}``, or a list of groups it spans)."""

    @model_validator(mode="before")
    @classmethod
    def _group_shorthand(cls, value):
        return {"group": value} if isinstance(value, str | list) else value

    group: str | list[str] = Field(
        ..., description="The group the role's workers live on, or a list of groups it spans."
    )
    dp_size: int | None = Field(
        None, ge=1, description="Data-parallel workers; null: one per slot of its group(s)."
    )
    sharding: ShardingName = Field(
        "none", description="none: replicas; full: FSDP over its workers; hybrid: see shard_size."
    )
    shard_size: int | None = Field(
        None, ge=1, description="hybrid only: workers per shard group (must divide dp_size)."
    )


class PlacementConfig(Section):
    strategy: Literal["local", "flatten", "interleave", "separate", "custom", "auto"] = Field(
        "local",
        description="local: every role in this process; flatten: every role on every slot; "
        "interleave: trained models everywhere, reference and reward model on disjoint halves; "
        "separate: rollout on its own slots; custom: placement.groups and placement.roles; "
        "auto: the planner's pick (`placerl plan CONFIG --auto` shows the ranking), with its "
        "trainer.micro_batch_size, model.gradient_checkpointing and placement.offload where "
        "you did not set them (what you set, the search holds to).",
    )
    replan_after: int = Field(
        5,
        ge=0,
        description="strategy auto: after this many steps on a Plan, refit the cost model to "
        "the run's measured phase times and re-search (0: never); a Plan switched to is tried "
        "for this many steps, then kept or left.",
    )
    replan_margin: float = Field(
        0.15,
        ge=0,
        description="strategy auto: a Plan is tried when it may be faster than the running "
        "one's measured step by more than this share (within the model's uncertainty), and "
        "kept only if it measures faster by as much (a Plan left is gone back to only then).",
    )
    max_replans: int = Field(
        3,
        ge=0,
        description="strategy auto: most switches in one run, trials and returns alike (each "
        "checkpoints and restarts on the other Plan); then it stays (0: never re-plan).",
    )
    max_staleness: int = Field(
        0, ge=0, description="Most policy updates a training sample may lag (0: on-policy)."
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where every stage computes: auto (the GPU(s) when torch sees one, else "
        "the CPU), cpu, or gpu (an error when torch sees no CUDA device). local: one device; "
        "Ray strategies: one GPU, or a share of the CPU cores, per worker.",
    )
    num_workers: int | None = Field(
        None,
        ge=1,
        description="Device slots to use: CPU worker processes (null: 2), or GPUs (null: all).",
    )
    threads_per_worker: int | None = Field(
        None,
        ge=1,
        description="torch threads per CPU slot; null: an even share of the cores. local: "
        "the threads of the one process (null: OMP_NUM_THREADS, else every core it may use); "
        "on a machine others share, fewer is faster.",
    )
    generation_slots: int | None = Field(
        None, ge=1, description="separate: slots given to the rollout; null: half of them."
    )
    sharding: ShardingName = Field(
        "none",
        description="Sharding of the model roles (actor, critic, reference, reward model) for "
        "flatten/interleave/separate: none (replicas), full (FSDP), hybrid (see shard_size).",
    )
    shard_size: int | None = Field(
        None, ge=1, description="sharding hybrid: workers per shard group (divides each dp)."
    )
    groups: dict[str, int | list[int]] = Field(
        default_factory=dict,
        description="custom: group name -> a number of slots (taken in order) or slot indices.",
    )
    roles: dict[RoleName, RolePlacementConfig] = Field(
        default_factory=dict,
        description="custom: role -> {group, dp_size, sharding, shard_size} or just a group "
        "name; every role the stage uses must appear.",
    )
    ray_address: str | None = Field(
        None, description="Address of a running Ray cluster; null: start a local Ray."
    )
    offload: bool = Field(
        False,
        description="GPU workers: move the models (and optimizer states) of roles idle between "
        "phases to CPU memory, so colocated roles (flatten) need not all fit at once; "
        "FSDP-sharded models stay. No effect on CPU workers. strategy auto sets it from its "
        "pick unless you set it.",
    )

    @model_validator(mode="after")
    def _strategy_needs(self) -> PlacementConfig:
        custom = self.strategy == "custom"
        if custom and not self.roles:
            raise ValueError("strategy custom needs placement.roles (role -> {group, ...})")
        if not custom and (self.roles or self.groups):
            raise ValueError(
                f"placement.groups and placement.roles are read only by strategy custom, "
                f"but strategy is {self.strategy}"
            )
        if self.sharding == "hybrid" and self.shard_size is None:
            raise ValueError("sharding hybrid needs placement.shard_size")
        if self.sharding != "hybrid" and self.shard_size is not None:
            raise ValueError(
                f"placement.shard_size is read only with sharding hybrid, not {self.sharding}"
            )
        return self
