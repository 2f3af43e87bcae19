"""The built-in tool task: the calculator, the split, the demonstrations in the demo
tokenizer's chat format (as the SFT stage renders them), and the reward."""

from __future__ import annotations

import random

import pytest

from placerl.data.formats import to_sft_pair
from placerl.models.loading import LoadOptions, load_tokenizer
from placerl.models.tokens import target_end
from placerl.rollout.tools import HermesParser, Status, ToolBox
from placerl.tasks.tool_arithmetic import (
    TOOL_CHAT_TEMPLATE,
    ToolArithmeticTask,
    calc,
    call_text,
    demonstration,
    final_answer_reward,
    is_held_out,
)


def test_the_calculator_agrees_with_python_on_random_expressions():
    rng = random.Random(0)
    for _ in range(500):
        terms = [str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
        expression = terms[0]
        for term in terms[1:]:
            expression += rng.choice("+-*") + term
        assert calc(expression) == str(eval(expression))  # noqa: S307 (integers and + - * only)


@pytest.mark.parametrize(
    "expression",
    ["2**10", "10/2", "__import__('os')", "x+1", "1.5+2", "9" * 30 + "*" + "9" * 30, "("],
)
def test_the_calculator_refuses_anything_else_and_the_model_reads_why(expression):
    (out,) = ToolBox([calc]).run(HermesParser().parse(call_text(expression)).calls)
    assert out.status is Status.ERROR and out.content.startswith("error: calc raised")


def test_train_and_eval_problems_are_disjoint():
    train = set(ToolArithmeticTask().expressions(3000, seed=0))
    held = set(ToolArithmeticTask(split="eval").expressions(300, seed=0))
    assert not train & held and all(is_held_out(e) for e in held)


def test_prompt_rows_carry_the_answer():
    for row in ToolArithmeticTask().prompt_rows(50, seed=1):
        assert row["answer"] == str(eval(row["prompt"][:-1]))  # noqa: S307


def test_the_reward_is_exact_match_of_a_final_answer_without_a_call():
    row = {"answer": "42"}
    assert final_answer_reward([{"role": "assistant", "content": " 42 "}], row) == 1.0
    assert final_answer_reward([{"role": "assistant", "content": "43"}], row) == 0.0
    call = call_text("6*7") + "42"
    assert final_answer_reward([{"role": "assistant", "content": call}], row) == 0.0


def test_demonstrations_teach_the_call_and_the_answer_in_the_sft_format(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, LoadOptions())
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    rows = ToolArithmeticTask().sft_rows(20, seed=0)
    assert len(rows) == 40
    for call_row, answer_row in zip(rows[::2], rows[1::2]):
        expression = call_row["messages"][0]["content"][:-1]
        prompt, completion = to_sft_pair(call_row, tokenizer)
        assert prompt == f"user: {expression}=\nassistant: "
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        target = target_end(ids, tokenizer)
        assert tokenizer.decode(target) == call_text(expression) + "</s>"
        prompt, completion = to_sft_pair(answer_row, tokenizer)
        assert prompt.endswith(f"</s>\ntool: {calc(expression)}\nassistant: ")
        assert completion.strip() == calc(expression) + "</s>"


def test_a_whole_demonstration_fits_the_demo_model(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, LoadOptions())
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    longest = max(
        len(tokenizer.apply_chat_template(demonstration(e), tokenize=True, return_dict=False))
        for e in ToolArithmeticTask().expressions(200, seed=0)
    )
    assert longest < 200  # the demo Llama has 256 positions
