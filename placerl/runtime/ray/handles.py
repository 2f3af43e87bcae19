"""Controller-side handles: the local roles' methods, carried out by a role's Ray workers.

Each handle has the same methods and signatures as the local role it stands for, so
``Roles`` holds them and the algorithms run unchanged. How data moves is declared per method:

- *split*: inference calls (``generate``, ``log_probs``, ``values``, ``score``) cut the batch
  into contiguous row shards, one per worker, and concatenate the results (``batching``);
- *replicated*: ``update`` sends every worker the whole batch (put in the object store once);
  each trains on its share of every minibatch (``data_parallel.ShardedUpdate``) and the
  pre-weighted stats are summed; ``state_dict``/``load_state_dict``/weights go to all workers
  (collective under FSDP) and rank 0 answers.

Every method has an ``*_async`` twin returning a ``Pending`` (``.result()``), so roles on
disjoint workers run at the same time (``algos.online.score``; locally the twins are deferred
calls, ``runtime.local.OnDevice``).
The rollout handle draws the sampling noise for the whole batch from its seeded generator on
the controller (``draw_uniforms``), exactly as the local rollout does, so responses do not
depend on how the rows are split; its state is that generator, as for the local rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray
import torch

from placerl.models.lora import load_trained_state, trained_state
from placerl.rollout.episodes.runner import draw_uniforms as draw_episode_uniforms
from placerl.rollout.episodes.sampling import episode_rows
from placerl.rollout.sampling import SamplingParams, draw_uniforms
from placerl.runtime.ray.batching import cat_results, owned_rows, shard_rows, take_rows
from placerl.runtime.ray.data_parallel import combine_update_stats
from placerl.runtime.ray.group import CallInfo, WorkerGroup
from placerl.types import Batch, Role


class Pending:
    """Results of one call on several workers, combined on first ``result()``; a role call's
    come with the worker's spans (``spans``), a host method's without."""

    def __init__(self, group: WorkerGroup, refs, calls, combine: Callable[[list], Any], spans=True):
        self._group, self._refs, self._calls, self._combine = group, refs, calls, combine
        self._spans, self._done, self._value = spans, False, None

    def result(self) -> Any:
        if not self._done:
            outputs = self._group.wait(self._refs, self._calls)
            if self._spans:
                for _, spans in outputs:
                    self._group.spans.extend(spans)
                outputs = [value for value, _ in outputs]
            self._value = self._combine(outputs)
            self._done = True
        return self._value


class RoleClient:
    """The workers of one role (world ranks in role-rank order) and how to call them."""

    def __init__(self, group: WorkerGroup, role: Role, ranks: Sequence[int], pad_token_id: int):
        self.group, self.role, self.ranks = group, role, list(ranks)
        self.pad_token_id = pad_token_id

    @property
    def size(self) -> int:
        return len(self.ranks)

    def _calls(self, method: str) -> list[CallInfo]:
        specs = self.group.specs
        return [
            CallInfo(rank, specs[rank].label, self.role.value, i, method)
            for i, rank in enumerate(self.ranks)
        ]

    def everywhere(self, method: str, *args, combine=None, **kwargs) -> Pending:
        """The same call on every worker; ``combine`` gets the list of results (rank order)."""
        refs = [
            self.group.actors[r].call.remote(self.role.value, method, args, kwargs)
            for r in self.ranks
        ]
        return Pending(self.group, refs, self._calls(method), combine or (lambda out: out[0]))

    def split(self, method: str, size: int, row_args: Sequence[Any], **kwargs) -> Pending:
        """Row shards of ``row_args`` (and of keyword arguments named ``rows_*``) to each
        worker; results concatenated in row order."""
        row_kwargs = {k[5:]: v for k, v in kwargs.items() if k.startswith("rows_")}
        same = {k: v for k, v in kwargs.items() if not k.startswith("rows_")}
        refs = []
        for rank, rows in zip(self.ranks, shard_rows(size, self.size), strict=True):
            args = [take_rows(a, rows) for a in row_args]
            kw = same | {k: take_rows(v, rows) for k, v in row_kwargs.items()}
            refs.append(self.group.actors[rank].call.remote(self.role.value, method, args, kw))
        owned = owned_rows(size, self.size)
        return Pending(
            self.group,
            refs,
            self._calls(method),
            lambda out: cat_results(out, owned, self.pad_token_id),
        )

    def on_hosts(self, method: str, *args) -> Pending:
        """A ``RoleHost`` method (not the role's), e.g. ``weights``, on every worker; rank 0's
        answer. Collective under FSDP, so every worker takes part."""
        refs = [
            getattr(self.group.actors[r], method).remote(self.role.value, *args) for r in self.ranks
        ]
        return Pending(self.group, refs, self._calls(method), lambda out: out[0], spans=False)


class _Handle:
    """Shared by every handle: the client, weights, and the state of trained roles."""

    def __init__(self, client: RoleClient):
        self.client = client

    def state_dict(self) -> dict:
        return self.client.everywhere("state_dict").result()

    def load_state_dict(self, state: dict) -> None:
        self.client.everywhere("load_state_dict", state, combine=lambda out: None).result()


class TrainedHandle(_Handle):
    """Actor or critic: ``update`` on the whole batch everywhere; a controller-side mirror
    ``model`` (for evaluation and checkpoints) refreshed by ``pull_weights``."""

    def __init__(self, client: RoleClient, mirror: torch.nn.Module):
        super().__init__(client)
        self.model = mirror
        self.version = 0  # updates done on the workers
        self.mirrored = 0  # the version the mirror holds

    def update_async(self, batch: Batch, objective, epochs: int = 1, minibatches: int = 1):
        self.version += 1
        ref = ray.put(batch)
        return self.client.everywhere(
            "update", ref, objective, epochs, minibatches, combine=combine_update_stats
        )

    def update(self, batch: Batch, objective, epochs: int = 1, minibatches: int = 1):
        return self.update_async(batch, objective, epochs, minibatches).result()

    def pull_weights(self) -> None:
        """Copy the workers' weights into the mirror, if they changed since the last copy."""
        if self.mirrored == self.version:
            return
        weights = self.client.on_hosts("weights").result()  # a LoRA model's adapters only
        load_trained_state(self.model, weights)
        self.mirrored = self.version

    def push_weights(self) -> None:
        """Load the mirror's weights on every worker (after a restore)."""
        state = trained_state(self.model)
        self.client.on_hosts("load_weights", ray.put(state)).result()
        self.mirrored = self.version


class ActorHandle(TrainedHandle):
    def fit_grouped(self, batch: Batch, objective, epochs: int = 1, minibatches: int = 1):
        """The grouped update (preference pairs, BRAIn groups), carried out like ``update``:
        the whole [G, n] batch to every worker, each trains on its rows of every minibatch
        (``ShardedActorMixin.fit_grouped``); ``objective`` must be picklable."""
        self.version += 1
        ref = ray.put(batch)
        pending = self.client.everywhere(
            "fit_grouped", ref, objective, epochs, minibatches, combine=combine_update_stats
        )
        return pending.result()

    def log_probs_async(self, batch: Batch) -> Pending:
        return self.client.split("log_probs", batch.batch_size[0], [batch])

    def log_probs(self, batch: Batch) -> torch.Tensor:
        return self.log_probs_async(batch).result()


class CriticHandle(TrainedHandle):
    def values_async(self, batch: Batch) -> Pending:
        return self.client.split("values", batch.batch_size[0], [batch])

    def values(self, batch: Batch) -> torch.Tensor:
        return self.values_async(batch).result()


class ReferenceHandle(_Handle):
    def log_probs_async(self, batch: Batch, temperature: float | None = None) -> Pending:
        return self.client.split("log_probs", batch.batch_size[0], [batch], temperature=temperature)

    def log_probs(self, batch: Batch, temperature: float | None = None) -> torch.Tensor:
        return self.log_probs_async(batch, temperature).result()


class RewardHandle(_Handle):
    def score_async(self, batch: Batch, prompts: list[str], columns: dict[str, list]) -> Pending:
        return self.client.split("score", batch.batch_size[0], [batch, prompts, columns])

    def score(self, batch: Batch, prompts: list[str], columns: dict[str, list]) -> torch.Tensor:
        return self.score_async(batch, prompts, columns).result()


class RolloutHandle:
    """Sampling over the rollout's workers with controller-drawn, per-row noise; with
    ``episodes`` (their limits), whole episodes, each row's noise drawn for all its turns."""

    def __init__(self, client: RoleClient, params: SamplingParams, seed: int, episodes=None):
        self.client = client
        self.params = params
        self.generator = torch.Generator().manual_seed(seed)
        self.episodes = episodes  # EpisodeLimits, or None: one response per prompt

    def sample_async(self, prompts) -> Pending:
        if self.episodes is None:
            return self.generate_async(prompts.ids, prompts.mask)
        rows = episode_rows(prompts)
        n = self.params.max_new_tokens
        uniforms = draw_episode_uniforms(len(rows), self.episodes, n, self.generator)
        return self.client.split("episodes", len(rows), [rows], rows_uniforms=uniforms)

    def sample(self, prompts) -> Batch:
        return self.sample_async(prompts).result()

    def generate_async(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        params: SamplingParams | None = None,
    ) -> Pending:
        params = params or self.params
        uniforms = draw_uniforms(prompt_ids.shape[0], params, self.generator)
        return self.client.split(
            "generate",
            prompt_ids.shape[0],
            [prompt_ids, prompt_mask],
            params=params,
            rows_uniforms=uniforms,
        )

    def generate(self, prompt_ids, prompt_mask, params: SamplingParams | None = None) -> Batch:
        return self.generate_async(prompt_ids, prompt_mask, params).result()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
