"""Step blame: the first-wrong-step detector and blame accuracy on hand-built advantages."""

import math

import pytest
import torch

from lit_vine.blame import blame_statistics, credit
from lit_vine.tasks.arithmetic import ArithmeticTask
from lit_vine.tasks.base import Problem

# true values: 47, 65, 60, 63
PROBLEM = Problem("p", "Compute 47 +18 -5 +3 from left to right.", "63")
TASK = ArithmeticTask(num_train=1, num_validation=0, num_test=0)


@pytest.mark.parametrize(
    "response, wrong",
    [
        ("47+18=65\n65-5=60\n60+3=63\n#### 63", None),  # right
        ("47+18=65\n65-5~60\n60+3=63\n#### 63", None),  # a quick step without borrow is right
        ("47+18~55\n55-5=50\n50+3=53\n#### 53", 0),  # quick step with a carry
        ("47+18=65\n65-5=70\n70+3=73\n#### 73", 1),  # wrong at step 1; later steps follow it
        ("47+18=65\n65-5=60\n60+3=64\n#### 64", 2),  # wrong at the last step
        ("47+18=65\n65-5=60\n60+3=63\n#### 64", 2),  # the answer line belongs to the last step
        ("47+18=65\n65-5=60\n#### 60", 1),  # a step left out: the last written step ends wrong
        ("47+18=65\n65-5=60\n60+3=63\n63+0=63\n#### 63", 3),  # a step the chain does not have
        ("I do not know", 0),  # unparsable
        ("", 0),
    ],
)
def test_first_wrong_step_on_hand_made_responses(response, wrong):
    assert TASK.first_wrong_step(response, PROBLEM) == wrong


# 47+18 carries, 65-5 and 60+3 do not: the shortest correct answer checks the first step only
# (38 characters); the slack of 5 leaves room for one more check.
BUDGET_TASK = ArithmeticTask(num_train=1, num_validation=0, num_test=0, show_carries=True, length_slack=5)


@pytest.mark.parametrize(
    "response, wrong",
    [
        ("47+18=55+10=65\n65-5~60\n60+3~63\n#### 63", None),  # the shortest correct answer
        ("47+18=55+10=65\n65-5=60-0=60\n60+3~63\n#### 63", None),  # one needless check fits the slack
        ("47+18=65\n65-5~60\n60+3~63\n#### 63", None),  # a plain worked step is right too
        ("47+18=55+10=65\n65-5=60-0=60\n60+3=63+0=63\n#### 63", 2),  # the second needless check overruns
        ("47+18~55\n55-5~50\n50+3~53\n#### 53", 0),  # a skipped check where there is a carry
        ("47+18=55+0=55\n55-5~50\n50+3~53\n#### 53", 0),  # a check that misses the carry
    ],
)
def test_first_wrong_step_under_a_length_budget(response, wrong):
    assert BUDGET_TASK.first_wrong_step(response, PROBLEM) == wrong
    assert BUDGET_TASK.reward(response, PROBLEM) == (wrong is None)


def test_a_length_budget_without_checked_forms_counts_the_plain_rest():
    """Without show_carries the shortest rest of a solution is written plain (63+18=81), so a right
    answer that fits the budget has no wrong step."""
    task = ArithmeticTask(num_train=1, num_validation=0, num_test=0, length_slack=0)
    problem = Problem("q", "Compute 60 +3 +18 from left to right.", "81")
    for response, wrong in [("60+3~63\n63+18=81\n#### 81", None), ("60+3=63\n63+18=81\n#### 81", None), ("60+3=63\n63+18=81\n####  81", 1)]:
        assert task.first_wrong_step(response, problem) == wrong
        assert task.reward(response, problem) == (wrong is None)


def test_credit_by_hand():
    assert credit([0.0, 0.1, -0.8, 0.0, -0.2], wrong=2) == 1.0  # the wrong step is the most negative
    assert credit([0.0, -0.9, -0.8], wrong=2) == 0.0
    assert credit([-0.5] * 5, wrong=2) == pytest.approx(1 / 5)  # outcome-level: a five-way tie = chance
    assert credit([-0.5, -0.5, 0.3], wrong=1) == pytest.approx(1 / 2)


class CharTokenizer:
    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != self.eos_token_id)


def episodes(responses):
    ids = [[ord(c) for c in r] + [0] for r in responses]
    return ids, torch.zeros(len(ids), max(map(len, ids)))


def test_blame_statistics_stepwise_and_outcome_level():
    responses = [
        "47+18=65\n65-5=60\n60+3=63\n#### 63",  # right
        "47+18=65\n65-5=70\n70+3=73\n#### 73",  # wrong at step 1
        "47+18~55\n55-5=50\n50+3=53\n#### 53",  # wrong at step 0
    ]
    ids, advantages = episodes(responses)
    scores = torch.tensor([1.0, 0.0, 0.0])
    starts = [[0, 8, 16]] * 3  # first tokens of steps 0, 1, 2: "47+18=65" | "\n65-5=60" | "\n60+3=63\n#### 63"
    # Step-wise: response 1 blames step 1 (-0.7), response 2 blames step 0 (-0.4).
    for row, values in enumerate([[0.2, 0.1, 0.3], [0.0, -0.7, 0.0], [-0.4, 0.0, 0.0]]):
        for step, value in enumerate(values):
            end = starts[row][step + 1] if step < 2 else len(ids[row])
            advantages[row, starts[row][step] : end] = value
    stats = blame_statistics([PROBLEM] * 3, ids, responses, scores, advantages, TASK, CharTokenizer())
    assert stats["blame/accuracy"] == 1.0 and stats["blame/chance"] == pytest.approx(1 / 3)
    assert stats["blame/failed_responses"] == 2
    assert stats["blame/advantage_wrong_step"] == pytest.approx((-0.7 - 0.4) / 2)
    # right steps: all three of response 0, step 0 of response 1
    assert stats["blame/advantage_right_steps"] == pytest.approx((0.2 + 0.1 + 0.3 + 0.0) / 4)
    # Outcome-level: one advantage for every token of a response scores the chance level.
    outcome = torch.tensor([0.5, -0.5, -0.5])[:, None].expand_as(advantages).clone()
    stats = blame_statistics([PROBLEM] * 3, ids, responses, scores, outcome, TASK, CharTokenizer())
    assert stats["blame/accuracy"] == pytest.approx(stats["blame/chance"]) == pytest.approx(1 / 3)
    assert math.isclose(stats["blame/advantage_wrong_step"], -0.5)
