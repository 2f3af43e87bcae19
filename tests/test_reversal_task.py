from placerl.tasks.reversal import ReversalTask, is_held_out


def test_demonstrator_errs_only_on_odd_first_strings_at_the_configured_rate():
    rows = ReversalTask(noise=0.8).sft_rows(4000, seed=0)
    odd_wrong = odd = 0
    for row in rows:
        digits = row["prompt"][4:-1]
        reversed_ = digits[::-1]
        if int(digits[0]) % 2 == 0:
            assert row["completion"] == reversed_
        else:
            odd += 1
            odd_wrong += row["completion"] != reversed_
    assert 0.75 < odd_wrong / odd < 0.85


def test_preferences_always_prefer_the_reversal():
    for row in ReversalTask().preference_rows(500, seed=0):
        digits = row["prompt"][4:-1]
        assert row["chosen"] == digits[::-1] != row["rejected"]


def test_eval_split_is_held_out():
    train = set(ReversalTask().strings(3000, seed=0))
    held = set(ReversalTask(split="eval").strings(300, seed=0))
    assert not train & held and all(is_held_out(d) for d in held)
