"""split_math: the MATH step rule (newlines, sentence ends, no cut inside math, merge/halve)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lit_vine.steps import split_math


def test_newlines_and_sentence_ends():
    text = "We have $x = 2$ from the first equation.\nThen the second one gives $y = 3$. So the sum is $\\boxed{5}$."
    assert split_math(text) == [
        "We have $x = 2$ from the first equation.\n",
        "Then the second one gives $y = 3$.",
        " So the sum is $\\boxed{5}$.",
    ]


def test_sentence_end_inside_math_is_not_a_cut():
    text = "Let $a = 1. B$ be given and note this sentence. Now we finish the work."
    assert split_math(text) == ["Let $a = 1. B$ be given and note this sentence.", " Now we finish the work."]


def test_period_at_end_of_math_ends_a_sentence():
    text = "Hence the value is $\\frac{1}{2}.$ Next we compute the other one."
    assert split_math(text) == ["Hence the value is $\\frac{1}{2}.$", " Next we compute the other one."]


def test_display_math_and_asy_are_never_cut():
    text = "Consider:\n$$\na + b\n= c.\n$$\nAnd [asy]\ndraw((0,0)--(1,1));\n[/asy]\nWe are done here."
    parts = split_math(text)
    assert "".join(parts) == text
    assert any("$$\na + b\n= c.\n$$" in p for p in parts)
    assert any("[asy]\ndraw((0,0)--(1,1));\n[/asy]" in p for p in parts)


def test_short_pieces_without_period_merge_into_next():
    # "Step one:\n" (10 chars, no period) joins the next line; "Ok.\n" ends in a period and stays.
    text = "Step one:\nwe add the two numbers together to get ten.\nOk.\nThe result is ten."
    assert split_math(text) == [
        "Step one:\nwe add the two numbers together to get ten.\n",
        "Ok.\n",
        "The result is ten.",
    ]


def test_short_last_piece_joins_previous():
    text = "This is a long enough first sentence here.\n$x=1$"
    assert split_math(text) == [text]


def test_long_piece_is_halved_near_the_middle_at_a_comma():
    left = "a" * 55 + ", "
    right = "b" * 60
    text = left + right  # 117 chars, one comma, no sentence end
    assert split_math(text) == [left, right]


def test_long_piece_never_halved_inside_math():
    text = "$" + ", ".join(["x"] * 60) + "$"  # 121 chars, commas only inside math
    assert split_math(text) == [text]


def test_empty():
    assert split_math("") == []


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab .,$\\[]\nAT:=+", max_size=300))
def test_pieces_join_back(text):
    parts = split_math(text)
    assert "".join(parts) == text
    assert all(parts)
