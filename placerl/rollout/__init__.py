"""Sampling and episodes.

- ``sampling.py``: batched sampling with a KV cache (one response per prompt); ``decode`` is
  the token loop both paths share.
- ``continuation.py``: one turn of many sequences, each continuing from its kept KV cache
  after appended tokens (multi-turn).
- ``tools/``: tools from typed Python functions, the tool-call parser, execution with
  timeouts; ``envs/``: the environment protocol, the tool environment, loading factories.
- ``episodes/``: the token-exact episode record, observation tokens tokenised alone, the
  runner, the batch layout, metrics and samples, the re-tokenisation check.
- ``vllm_engine.py``: vLLM behind the same sampling contract.
"""
