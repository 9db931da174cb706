"""MATH answer extraction, normalisation, the math-verify grader and its time limit; GSM8K edge cases."""

from __future__ import annotations

import threading
import time

import pytest

from lit_vine.grading import MathGrader, extract_gsm8k_answer, extract_math_answer, grade_gsm8k, normalize_math_answer


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(time_limit=1.0)
    yield g
    g.close()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{1}, then \\boxed{\\{2, 3\\}}", "\\{2, 3\\}"),  # the last box, inner braces balanced
        ("nested \\boxed{\\sqrt{\\frac{a}{b}}} done", "\\sqrt{\\frac{a}{b}}"),
        ("$\\boxed 7$", "7"),
        ("\\fbox{-3}", "-3"),
        ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("Thus the final answer is $$12$$", "12"),
        ("So the answer is 42.", "42"),
        ("no final answer here", None),
        ("unclosed \\boxed{12", None),
        ("The final answer is $\\$12$.", "\\$12"),  # an escaped dollar inside the math is not its end
        ("So the answer is $$\\text{\\$}5$$ in all", "\\text{\\$}5"),
    ],
)
def test_extract_math_answer(text, expected):
    assert extract_math_answer(text) == expected


def test_normalize_math_answer():
    assert normalize_math_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_math_answer("\\dfrac{1}{2}.") == normalize_math_answer("\\frac{1}{2}")


@pytest.mark.parametrize(
    "response, answer, reward",
    [
        ("$\\boxed{\\frac{1}{2}}$", "0.5", 1.0),  # needs math-verify: different strings
        ("$\\boxed{2\\sqrt{2}}$", "\\sqrt{8}", 1.0),
        ("$\\boxed{(1,2)}$", "(1, 2)", 1.0),  # string pre-check
        ("$\\boxed{3}$", "4", 0.0),
        ("I give up.", "4", 0.0),
        # math-verify reads "121_3" as 121: a numeral with a base must match digits and base
        ("$\\boxed{121_3}$", "121_4", 0.0),
        ("$\\boxed{121_{4}}$", "121_4", 1.0),
        ("$\\boxed{1011}$", "1011_2", 0.0),
        ("$\\boxed{4210_5}$", "4210_{5}", 1.0),
    ],
)
def test_math_grader(grader, response, answer, reward):
    assert grader(response, answer) == reward


def test_time_limit_scores_zero_and_counts(grader):
    # Expanding (a+b+c)^40 against (a+b+c+1)^40 takes sympy far longer than a second.
    before = grader.timeouts
    start = time.monotonic()
    assert grader("$\\boxed{(a+b+c)^{40}}$", "(a+b+c+1)^{40}") == 0.0
    assert time.monotonic() - start < 10
    assert grader.timeouts == before + 1
    assert grader("$\\boxed{\\frac{2}{4}}$", "1/2") == 1.0  # a fresh worker takes over


def test_grader_works_off_the_main_thread(grader):
    # math-verify's own signal timeout would raise here; the worker process does not care.
    results = []
    thread = threading.Thread(target=lambda: results.append(grader("$\\boxed{0.25}$", "\\frac14")))
    thread.start()
    thread.join(60)
    assert results == [1.0]


@pytest.mark.parametrize(
    "response, answer, reward",
    [
        ("... #### $1,250", "1250", 1.0),
        ("... #### 18 dollars", "18", 1.0),
        ("... #### 3.50", "3.5", 1.0),
        ("... #### -7", "-7", 1.0),
        ("#### 5\nthen #### 6", "6", 1.0),  # the last #### counts
        ("the answer is 18", "18", 0.0),  # no final answer
        ("#### 17", "18", 0.0),
        ("#### 42.", "42", 1.0),
        ("#### 1,000,000", "1000000", 1.0),
        ("#### 42%", "42", 1.0),
        ("#### 42 square feet", "42", 1.0),
        # one number and nothing else: hedges and expressions hold no answer
        ("#### 42 or 43", "42", 0.0),
        ("#### 42 or 43", "43", 0.0),
        ("#### 42 + 1", "42", 0.0),
        ("#### 42 + 1", "43", 0.0),
        ("#### 3/4", "3", 0.0),
        ("#### 42,43", "42", 0.0),  # not a thousands separator
        ("#### 5 and 6", "5", 0.0),
    ],
)
def test_grade_gsm8k(response, answer, reward):
    assert grade_gsm8k(response, answer) == reward


def test_extract_gsm8k_answer_none():
    assert extract_gsm8k_answer("#### no number") is None


def test_grade_many_memoizes_pools_and_keeps_the_time_limit():
    pairs = [("$\\boxed{\\frac{2}{4}}$", "1/2"), ("$\\boxed{0.5}$", "\\frac12"), ("$\\boxed{3}$", "4"), ("$\\boxed{(a+b+c)^{40}}$", "(a+b+c+1)^{40}")] * 3
    grader = MathGrader(time_limit=1.0, workers=2)
    single = MathGrader(time_limit=1.0, workers=1, memoize=False)
    try:
        start = time.monotonic()
        verdicts = grader.grade_many(pairs)
        assert verdicts == [1.0, 1.0, 0.0, 0.0] * 3
        assert grader.timeouts == 1  # the pathological comparison ran once, not three times
        assert time.monotonic() - start < 30
        assert [single(r, a) for r, a in pairs[:4]] == verdicts[:4] and single.timeouts == 1
        grader.close()  # memoized: a second batch needs no worker at all
        grader._start = lambda w: (_ for _ in ()).throw(AssertionError("a worker was started"))
        assert grader.grade_many(pairs) == verdicts
    finally:
        del grader._start
        grader.close()
        single.close()
