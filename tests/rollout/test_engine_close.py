"""Inference engines are closed when the runtime closes, not by vLLM's finaliser at
interpreter exit (issue 21.10). Fakes stand in for vLLM: the wiring is what is tested here;
tests/engine runs the real engine and closes it."""

from __future__ import annotations

from types import SimpleNamespace

from placerl.roles.rollout import EngineRolloutWorker
from placerl.rollout.sampling import SamplingParams
from placerl.rollout.vllm_engine import VLLMEngine
from placerl.runtime.local import LocalRuntime


class Core:
    def __init__(self):
        self.shutdowns = 0

    def shutdown(self):
        self.shutdowns += 1


def _engine(core: Core) -> VLLMEngine:
    engine = object.__new__(VLLMEngine)  # no vLLM here: only what close() reads
    engine.llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core))
    return engine


def test_closing_an_engine_shuts_its_core_down_once():
    core = Core()
    engine = _engine(core)
    engine.close()
    engine.close()
    assert core.shutdowns == 1 and engine.llm is None


def test_the_local_runtime_closes_its_engine():
    core = Core()
    rollout = EngineRolloutWorker(_engine(core), SamplingParams())
    runtime = LocalRuntime(roles=None, plan=None, setup=None, engine=rollout)
    runtime.close()
    assert core.shutdowns == 1
    LocalRuntime(roles=None, plan=None, setup=None).close()  # no engine: nothing to close
