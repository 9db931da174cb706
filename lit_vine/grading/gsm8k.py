"""GSM8K-style answers: the number on the last ``####`` line, compared exactly."""

from __future__ import annotations

import re
from fractions import Fraction

from lit_vine.grading.policy import GSM8KPolicy

_NUMERIC = GSM8KPolicy()

# The text after the last "####" must be one number: "$" before or after it, thousands grouped by
# commas or by spaces (3 digits a group), a decimal part or an exponent, a unit or "%" and a final
# period allowed, nothing else. "#### 42 or 43", "#### 42 + 1", "#### 3/4" and "#### 42,43" hold no
# answer, so a policy cannot hedge its way to a reward.
_NUMBER = r"-?(?:\d{1,3}(?:(?P<sep>[, ])\d{3})(?:(?P=sep)\d{3})*|\d+)(?:\.\d+)?(?:e[-+]?\d+)?|-?\.\d+"
_DECIMAL_COMMA = r"-?\d+,\d+"  # only where a grouping does not match: "1000,99", "0,111", "1,22"
_ONE_NUMBER = re.compile(rf"(?:\\?\$)?\s*(?P<number>{_NUMBER})\s*(?:\\?\$)?\s*(?:%|[A-Za-z]+(?:\s+[A-Za-z]+)*)?\s*\.?")
_ONE_NUMBER_DECIMAL_COMMA = re.compile(_ONE_NUMBER.pattern.replace("(?P<number>", f"(?P<number>{_DECIMAL_COMMA}|", 1))


def _value(number: str, policy: GSM8KPolicy) -> str:
    """A matched number as ``Fraction`` reads it: grouping dropped, a decimal comma made a point."""
    if policy.decimal_comma and re.fullmatch(_DECIMAL_COMMA, number) and not re.fullmatch(r"-?[1-9]\d{0,2},\d{3}", number):
        return number.replace(",", ".")
    return re.sub(r"[, ]", "", number)


def extract_gsm8k_answer(text: str, policy: GSM8KPolicy = _NUMERIC) -> str | None:
    """The answer after the last ``####``, if there is one; else ``None``.

    ``numeric`` reading: the number, thousands separators dropped, when the text is one number.
    ``authors`` reading: the text itself, stripped, commas removed and lowercased (empty: ``None``).
    """
    _, sep, tail = text.rpartition("####")
    if not sep:
        return None
    if policy.reading == "authors":
        return tail.strip().replace(",", "").lower() or None
    match = (_ONE_NUMBER_DECIMAL_COMMA if policy.decimal_comma else _ONE_NUMBER).fullmatch(tail.strip())
    return _value(match["number"], policy) if match else None


def grade_gsm8k(response: str, answer: str, policy: GSM8KPolicy = _NUMERIC) -> float:
    """1.0 if the response's ``####`` answer is the reference ``answer``, else 0.0.

    ``numeric``: equal as exact fractions (``3.50`` is ``3.5``), or within ``policy.tolerance``.
    ``authors``: equal as strings after the authors' clean-up, the reference's thousands commas
    dropped as well (their code keeps them, so a reference such as ``1,080`` can never be matched
    there).
    """
    predicted = extract_gsm8k_answer(response, policy)
    if predicted is None:
        return 0.0
    if policy.reading == "authors":
        return float(predicted == answer.replace(",", "").strip().lower())
    try:
        distance = abs(Fraction(predicted) - Fraction(_value(answer.strip(), policy)))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(distance <= Fraction(policy.tolerance))
