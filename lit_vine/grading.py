"""Answer extraction and reward: 1.0 for a correct final answer, 0.0 otherwise (also when none)."""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####``, commas and units dropped; ``None`` if there is none."""
    head, sep, tail = text.rpartition("####")
    if not sep:
        return None
    match = _NUMBER.search(tail)
    return match.group().replace(",", "") if match else None


def _as_number(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def grade_gsm8k(response: str, answer: str) -> float:
    """Numeric comparison of the response's ``####`` answer with the reference answer."""
    predicted = extract_gsm8k_answer(response)
    if predicted is None:
        return 0.0
    got, want = _as_number(predicted), _as_number(answer)
    return float(got is not None and want is not None and got == want)
