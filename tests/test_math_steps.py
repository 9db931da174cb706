"""split_math: the MATH step rule of the VinePPO authors' code, on hand-worked examples.

Each expected split is worked out by hand from the rules in ``lit_vine.steps.split_math``'s docstring
(pass numbers in the comments); the same texts were checked against the reference implementation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_vine.steps import split_lines, split_math

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def test_newlines_start_the_next_step_and_sentence_ends_cut():
    text = "We have $x = 2$ from the first equation.\nThen the second one gives $y = 3$. So the sum is $\\boxed{5}$."
    assert split_math(text) == [
        "We have $x = 2$ from the first equation.",
        "\nThen the second one gives $y = 3$.",  # pass 1: a period then " S" ends the sentence
        " So the sum is $\\boxed{5}$.",
    ]


def test_aligned_environment_is_cut_at_its_own_newlines():
    text = "We expand both sides.\n\\begin{align*}\n(x+1)^2 &= x^2 + 2x + 1 \\\\\n&= 4.\n\\end{align*}\nSo $x = 1$."
    assert split_math(text) == [
        "We expand both sides.",
        # pass 3: "\n\\begin{align*}" is a lone opening and joins the next line
        "\n\\begin{align*}\n(x+1)^2 &= x^2 + 2x + 1 \\\\",
        "\n&= 4.",
        # pass 2: "\nSo $x = 1$." is 12 characters: the last piece joins the previous one
        "\n\\end{align*}\nSo $x = 1$.",
    ]


def test_asy_code_and_display_math_are_cut_at_their_newlines():
    text = "Draw the figure.\n[asy]\ndraw((0,0)--(1,1));\n[/asy]\nThe area is\n$$\n\\frac{1}{2}.\n$$\nThus the answer is $\\frac12$."
    assert split_math(text) == [
        "Draw the figure.\n[asy]",  # pass 2: 16 characters without a math period join the [asy] line
        "\ndraw((0,0)--(1,1));",
        "\n[/asy]",
        "\nThe area is\n$$",  # pass 1: "\nThe area is" is short and has no period
        "\n\\frac{1}{2}.",
        "\n$$\nThus the answer is $\\frac12$.",  # pass 3: a lone "$$" joins the next piece
    ]


def test_math_ending_in_a_period_ends_a_step_without_space_or_capital():
    text = "Hence the value is $\\frac{1}{2}.$ next we compute the other one and it is $3.$"
    assert split_math(text) == ["Hence the value is $\\frac{1}{2}.$", " next we compute the other one and it is $3.$"]


def test_sentence_end_inside_math_is_not_a_cut():
    text = "Let $a = 1. B$ be given and note this sentence. Now we finish the work."
    assert split_math(text) == ["Let $a = 1. B$ be given and note this sentence.", " Now we finish the work."]


def test_abbreviations_do_not_end_sentences():
    # "e.g." (one-letter word) and " is." (two letters after a space) do not cut; "class." does.
    text = "We use the formula, e.g. The one from class. Then we are done here now. It is. Then we stop."
    assert split_math(text) == ["We use the formula, e.g. The one from class.", " Then we are done here now.", " It is. Then we stop."]


def test_short_pieces_join_the_next_one():
    # pass 1: "Step one:" (no period) joins the next line; pass 2: "\nOk." is under 20 characters
    # and does not end in math, so it joins the next piece too.
    text = "Step one:\nwe add the two numbers together to get ten.\nOk.\nThe result is ten."
    assert split_math(text) == ["Step one:\nwe add the two numbers together to get ten.", "\nOk.\nThe result is ten."]


def test_long_prose_breaks_after_the_comma_nearest_the_middle():
    text = "a" * 55 + ", " + "b" * 60  # 117 characters: over 100, both sides >= 40
    assert split_math(text) == ["a" * 55 + ",", " " + "b" * 60]


def test_long_math_breaks_after_an_equals_sign():
    text = "$" + "a" * 30 + "=" + "b" * 80 + "$"  # all math: no prose break; "=" leaves 32 | 81
    assert split_math(text) == ["$" + "a" * 30 + "=", "b" * 80 + "$"]


def test_long_math_without_a_break_point_stays_whole():
    text = "$" + ", ".join(["x"] * 60) + "$"  # commas only inside math, no math break pattern
    assert split_math(text) == [text]


def test_empty_and_short():
    assert split_math("") == []
    assert split_math("So $x=1$.") == ["So $x=1$."]  # the reference drops a response this short


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab .,$\\[]{}\nAT:=+", max_size=300))
def test_pieces_join_back(text):
    parts = split_math(text)
    assert "".join(parts) == text
    assert all(parts)


@pytest.mark.parametrize("name, field, split", [("math500", "solution", split_math), ("gsm8k_test", "answer", split_lines)])
def test_gold_solutions_cut_where_the_reference_cuts(name, field, split):
    """Against the reference's own cut points on the real data (made by benchmarks/math_steps.py)."""
    path = DATA / ("math500/test.jsonl" if name == "math500" else "gsm8k/test.jsonl")
    if not path.is_file():
        pytest.skip(f"{path} not present")
    import re

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    reference = [json.loads(line)["cuts"] for line in (REPO / f"benchmarks/math_steps/reference_cuts_{name}.jsonl").read_text().splitlines()]
    same = 0
    for row, want in zip(rows, reference):
        text = row[field] if name == "math500" else re.sub(r"<<.*?>>", "", row[field])
        pieces = split(text)
        cuts = [0] + [sum(map(len, pieces[: i + 1])) for i in range(len(pieces))]
        same += cuts == want
    print(f"{name}: {same}/{len(rows)} gold solutions cut exactly where the reference cuts")
    assert same / len(rows) >= 0.99
