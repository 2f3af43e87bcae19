from placerl.tasks.addition import AdditionTask, carry_less_sum, is_held_out
from placerl.tasks.rewards import exact_match_reward


def test_carry_less_sum_forgets_every_carry():
    assert carry_less_sum(58, 67) == 15  # 8+7=15 → 5, 5+6=11 → 1
    assert carry_less_sum(12, 34) == 46  # no carry: the true sum


def test_answers_are_written_least_significant_digit_first():
    task = AdditionTask(carry_noise=0.0)
    for row in task.sft_rows(20, seed=0):
        a, b = map(int, row["prompt"].rstrip("=").split("+"))
        assert row["completion"] == str(a + b)[::-1]


def test_train_and_eval_problems_are_disjoint():
    train = {r["prompt"] for r in AdditionTask().prompt_rows(3000, seed=0)}
    held = {r["prompt"] for r in AdditionTask(split="eval").prompt_rows(300, seed=0)}
    assert not train & held
    assert all(is_held_out(*map(int, p.rstrip("=").split("+"))) for p in held)


def test_noise_only_drops_carries_at_the_configured_rate():
    task = AdditionTask(carry_noise=0.5, reverse=False)
    rows = task.sft_rows(4000, seed=1)
    carry_rows = wrong = 0
    for row in rows:
        a, b = map(int, row["prompt"].rstrip("=").split("+"))
        answer = int(row["completion"])
        assert answer in (a + b, carry_less_sum(a, b))
        if carry_less_sum(a, b) != a + b:
            carry_rows += 1
            wrong += answer != a + b
    assert 0.45 < wrong / carry_rows < 0.55


def test_preferences_prefer_the_true_sum():
    task = AdditionTask(reverse=False)
    for row in task.preference_rows(200, seed=0):
        a, b = map(int, row["prompt"].rstrip("=").split("+"))
        assert row["chosen"] == str(a + b) != row["rejected"]


def test_exact_match_reward():
    assert exact_match_reward(["24", " 24 ", "25"], answer=["24", "24", "24"]) == [1.0, 1.0, 0.0]
