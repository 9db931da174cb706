"""docs/grading.md's policy tables hold for lit-vine: every row's default verdict, and the verdict
its option column claims, come out of the graders as written there."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from lit_vine.grading import GSM8KPolicy, MathGrader, MathPolicy, grade_gsm8k

DOC = (Path(__file__).resolve().parents[1] / "docs" / "grading.md").read_text()
VERDICT = {"✓": 1.0, "✗": 0.0}
OPTION = re.compile(r"`(\w+): ([^`]+)`(?::)? \(?(✓|✗)\)?")


def table(heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``, cells stripped."""
    section = DOC.split(heading, 1)[1]
    lines = [line for line in section.split("\n\n## ", 1)[0].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def code(cell: str) -> str:
    return re.fullmatch(r"`(.*)`", cell).group(1)


def option(cell: str) -> tuple[dict, float] | None:
    """``{name: value}`` and the verdict an option cell claims, or ``None`` for "-" / "(always ...)".
    Values are read as YAML, numbers in exponent form (``1e-6``) as floats, as jsonargparse does."""
    match = OPTION.search(cell)
    if not match:
        return None
    value = yaml.safe_load(match[2])
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?e[-+]?\d+", value):
        value = float(value)
    return {match[1]: value}, VERDICT[match[3]]


MATH_ROWS = table("## MATH: the policy table")
GSM8K_ROWS = table("## GSM8K")


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(time_limit=5.0, workers=2)
    yield g
    g.close()


@pytest.mark.parametrize("row", MATH_ROWS, ids=lambda row: row[0])
def test_math_table_row(grader, row):
    name, reference, prediction, default, chosen = row[:5]
    prediction = code(prediction)
    response = prediction if "\\boxed" in prediction else f"The answer is $\\boxed{{{prediction}}}$."
    question = "Enter all the solutions, separated by commas." if "separated by commas" in name else None
    assert grader.grade_many([(response, code(reference))], [question]) == [VERDICT[default]]
    if (claimed := option(chosen)) is not None:
        options, verdict = claimed
        assert grader.grade_many([(response, code(reference))], [question], policy=dataclasses.replace(MathPolicy(), **options)) == [verdict]


@pytest.mark.parametrize("row", GSM8K_ROWS, ids=lambda row: row[0])
def test_gsm8k_table_row(row):
    response, reference, numeric, authors = row[:4]
    assert grade_gsm8k(code(response), code(reference)) == VERDICT[numeric[0]]
    assert grade_gsm8k(code(response), code(reference), GSM8KPolicy(reading="authors")) == VERDICT[authors]
    if (claimed := option(numeric)) is not None:
        options, verdict = claimed
        assert grade_gsm8k(code(response), code(reference), GSM8KPolicy(**options)) == verdict


def test_the_tables_cover_every_option():
    math_options = {name for row in MATH_ROWS if (claimed := option(row[4])) for name in claimed[0]}
    gsm8k_options = {name for row in GSM8K_ROWS if (claimed := option(row[2])) for name in claimed[0]} | {"reading"}
    assert math_options == {f.name for f in dataclasses.fields(MathPolicy)}
    assert gsm8k_options == {f.name for f in dataclasses.fields(GSM8KPolicy)}
