"""Graders and step splitters on the real GSM8K / MATH500 files (skipped where they are absent)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lit_vine.grading import MathGrader, extract_math_answer, grade_gsm8k
from lit_vine.steps import split_lines, split_math

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rows(relative: str) -> list[dict]:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def math_grader():
    grader = MathGrader(time_limit=5.0)
    yield grader
    grader.close()


@pytest.mark.parametrize("split", ["train", "test"])
def test_gsm8k_gold_solutions_grade_correct(split):
    data = rows(f"gsm8k/{split}.jsonl")
    # The reference answer is what follows "####", read here independently of the grader.
    refs = [row["answer"].split("####")[-1].strip() for row in data]
    correct = sum(grade_gsm8k(row["answer"], ref) for row, ref in zip(data, refs))
    print(f"GSM8K {split}: {correct}/{len(data)} gold solutions graded correct ({100 * correct / len(data):.2f}%)")
    assert correct == len(data)
    # Wrong: a perturbed final number, and the next problem's reference where it differs.
    for row, ref, other in zip(data, refs, refs[1:] + refs[:1]):
        wrong = str(int(ref.replace(",", "")) + 1)
        assert grade_gsm8k(row["answer"], wrong) == 0.0
        if other.replace(",", "") != ref.replace(",", ""):
            assert grade_gsm8k(row["answer"], other) == 0.0


@pytest.mark.parametrize("split", ["train", "test"])
def test_gsm8k_gold_solutions_split_back(split):
    for row in rows(f"gsm8k/{split}.jsonl"):
        steps = split_lines(row["answer"])
        assert "".join(steps) == row["answer"]
        assert "####" in steps[-1] and all("####" not in s for s in steps[:-1])
        assert all(s.startswith("\n") for s in steps[1:])  # the line break opens the next step


def test_math500_gold_solutions_grade_correct(math_grader):
    data = rows("math500/test.jsonl")
    correct = sum(math_grader(row["solution"], row["answer"]) for row in data)
    print(f"MATH500: {correct:.0f}/{len(data)} gold solutions graded correct ({100 * correct / len(data):.2f}%)")
    assert correct == len(data)
    assert math_grader.timeouts == 0


def test_math500_answers_equivalent_through_math_verify(math_grader):
    """The string pre-check accepts most gold solutions; check math-verify itself on every answer."""
    data = rows("math500/test.jsonl")
    assert all(math_grader.equivalent(row["answer"], row["answer"]) for row in data)


def test_math500_wrong_answers_grade_wrong(math_grader):
    data = rows("math500/test.jsonl")
    accepted = []
    for row, other in zip(data, data[1:] + data[:1]):
        # Skip pairs whose answers are the same value: equal strings, or "x=5" vs "5" (math-verify
        # reads an assignment as its value, which is the right call for a final answer).
        same = re.sub(r"^[a-z]\s*=\s*", "", other["answer"]) == re.sub(r"^[a-z]\s*=\s*", "", row["answer"])
        if not same and math_grader(f"So the answer is $\\boxed{{{other['answer']}}}$.", row["answer"]):
            accepted.append((row["answer"], other["answer"]))
    assert accepted == []
    # Perturbed integers.
    integers = [row for row in data if re.fullmatch(r"-?\d+", row["answer"])]
    assert len(integers) > 200
    for row in integers:
        perturbed = row["solution"].replace(f"\\boxed{{{row['answer']}}}", f"\\boxed{{{int(row['answer']) + 1}}}")
        assert math_grader(perturbed, row["answer"]) == 0.0


def _cuts(parts: list[str]) -> list[int]:
    ends, total = [], 0
    for part in parts[:-1]:
        total += len(part)
        ends.append(total)
    return ends


def test_math500_splitter_cuts_math_only_at_newlines_and_break_points():
    """As in the reference: math is cut only at its own newlines (display math, aligned
    environments, [asy] code) and, in pieces over 100 characters, right after ``=``, ``+``, ...,
    or at a prose break (``,`` ...) when the piece starts inside math cut at a newline (its math is
    then looked for afresh and not found)."""
    data = rows("math500/test.jsonl")
    counts, inside = [], 0
    for row in data:
        text = row["solution"]
        parts = split_math(text)
        assert "".join(parts) == text
        counts.append(len(parts))
        for cut in _cuts(parts):
            before = text[:cut]
            in_inline = len(re.findall(r"(?<!\\)\$", before)) % 2 == 1
            in_display = len(re.findall(r"(?<!\\)\\\[", before)) > len(re.findall(r"(?<!\\)\\\]", before))
            in_asy = before.count("[asy]") > before.count("[/asy]")
            if in_inline or in_display or in_asy:
                inside += 1
                assert text[cut] == "\n" or before.endswith(("=", "+", ",$", "\\equiv", "\\cancelto", ",", " and", ":", " to")), (row["unique_id"], before[-40:])
    print(f"MATH500 solutions: {sum(counts) / len(counts):.1f} steps on average, at most {max(counts)}; {inside} cuts inside math")
    assert sum(counts) > 2 * len(data) and inside > 0


def test_math500_multiple_boxes_take_the_last():
    data = rows("math500/test.jsonl")
    several = [row for row in data if row["solution"].count("\\boxed") > 1]
    assert several
    for row in several:
        tail = row["solution"][row["solution"].rindex("\\boxed") :]
        assert extract_math_answer(row["solution"]) == extract_math_answer(tail)
