"""Whatever a model emits (random bytes decoded with errors="replace", random Unicode, answer-shaped
junk), step splitting, answer extraction and grading neither raise nor return anything but 0.0/1.0."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_vine.grading import MathGrader, extract_gsm8k_answer, extract_math_answer, grade_gsm8k
from lit_vine.steps import split_lines, split_math, step_token_ends

bytes_text = st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="replace"))
unicode_text = st.text(max_size=300)
answer_shaped = st.tuples(unicode_text, st.sampled_from(["#### ", "\\boxed{", "$", "The answer is ", "\\frac{", "\n", ". A"]), unicode_text).map("".join)
outputs = st.one_of(bytes_text, unicode_text, answer_shaped)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(text=outputs)
def test_step_splitters_return_pieces_that_join_back(text):
    for split in (split_lines, split_math):
        pieces = split(text)
        assert "".join(pieces) == text


@FAST
@given(text=outputs)
def test_step_token_ends_on_the_tiny_tokenizer(text, tiny):
    _, tokenizer = tiny
    ids = tokenizer(text, add_special_tokens=False).input_ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    for split in (split_lines, split_math):
        ends = step_token_ends(ids, split(decoded), tokenizer)
        assert ends[-1] == len(ids) and all(a < b for a, b in zip(ends, ends[1:]))


@FAST
@given(text=outputs, answer=st.one_of(st.integers(-10**6, 10**6).map(str), unicode_text))
def test_gsm8k_grading_is_a_valid_reward(text, answer):
    extract_gsm8k_answer(text)
    assert grade_gsm8k(text, answer) in (0.0, 1.0)


@pytest.fixture(scope="module")
def math_grader():
    grader = MathGrader(time_limit=5.0)
    yield grader
    grader.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=outputs, answer=st.sampled_from(["2", "\\frac{1}{2}", "x^2+1", "\\sqrt{3}", "(1,2)"]))
def test_math_grading_is_a_valid_reward(text, answer, math_grader):
    extract_math_answer(text)
    assert math_grader(text, answer) in (0.0, 1.0)
    assert math_grader(f"\\boxed{{{text[:40]}}}", answer) in (0.0, 1.0)  # junk inside the box reaches math-verify
