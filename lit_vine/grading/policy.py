"""The graders' options: what a grader pays and what it refuses, each choice named.

The defaults are the strict choices an RL reward needs (a reward is hackable where an evaluation
metric is merely lenient); ``docs/grading.md`` sets every option beside math-verify's defaults, the
VinePPO authors' grader and NeMo-Skills' symbolic grader. Both classes are plain dataclasses, so a
YAML config selects them field by field (``math_policy: {comma_lists: unordered}``).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Literal


def _check_choices(instance: object) -> None:
    """Raise a ``ValueError`` naming the field whose value is not one of its ``Literal`` choices."""
    hints = typing.get_type_hints(type(instance))
    for field in fields(instance):
        choices = typing.get_args(hints[field.name])
        value = getattr(instance, field.name)
        if typing.get_origin(hints[field.name]) is Literal and value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{type(instance).__name__}.{field.name} must be one of {allowed}; got {value!r}")


@dataclass(frozen=True)
class GSM8KPolicy:
    """How a GSM8K-style ``#### answer`` line is read and compared.

    Args:
        reading: ``numeric``: the text after the last ``####`` must be one number (thousands
            separated by commas or spaces, ``$`` before or after it, a unit word or ``%`` and a final
            period allowed) and is compared exactly, as a fraction. ``authors``: the VinePPO authors'
            reading (``tasks/gsm8k.py``): the text after the last ``####``, stripped, commas removed
            and lowercased, must equal the reference string (``#### 18 dollars``, ``#### 3.50`` for
            ``3.5`` and ``#### 1 000`` are wrong there).
        decimal_comma: ``numeric`` reading: read ``1000,99`` and a reference ``1,22`` as decimals
            (math-verify). Off: a comma only groups thousands (``1,000``); ``#### 1000,99`` holds
            no answer.
        tolerance: ``numeric`` reading: pay a number within this distance of the reference
            (torchforge pays within 1e-6). 0: exactly equal, the reference is an exact count.
    """

    reading: Literal["numeric", "authors"] = "numeric"
    decimal_comma: bool = False
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        _check_choices(self)
        if not isinstance(self.decimal_comma, bool):
            raise TypeError(f"GSM8KPolicy.decimal_comma must be true or false; got {self.decimal_comma!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or not 0 <= self.tolerance < float("inf"):
            raise ValueError(f"GSM8KPolicy.tolerance must be a finite number >= 0; got {self.tolerance!r}")


@dataclass(frozen=True)
class MathPolicy:
    """How a MATH-style answer is read and when two answers are equal.

    Args:
        extraction: ``boxed``: the final ``\\boxed{}`` (see ``boxes``), else a closing "the answer is
            ..." phrase; prose elsewhere is never read. ``free``: math-verify reads both texts its
            own way (the last math anywhere, numbers in prose) and compares them with its defaults:
            an evaluation mode for free-form outputs, not a reward (none of the guards below apply).
        boxes: ``join``: boxes at the end of a response that only a connector separates
            (``\\boxed{1}, \\boxed{-2}``; ``\\boxed{6} and \\boxed{8}``) are the parts of one answer,
            read as the list ``1, -2``; the same for a reference solution. ``last``: the last box
            alone (the VinePPO authors' reading when the reference has one box).
        comma_lists: bare lists ``a, b, c`` (no brackets). ``ordered``: item by item, in order
            (hendrycks' MATH checker); ``unordered``: as sets (math-verify, MARIO); ``question``: as
            sets when the question asks for values "separated by commas" (MATH's wording for "enter
            all the solutions"; the VinePPO authors' rule), in order otherwise and when no question
            is given. ``(a, b)`` tuples are always ordered and ``\\{a, b\\}`` always sets.
        unevaluated: a prediction that leaves number arithmetic undone (``17\\cdot 23``, ``2^{10}``,
            ``\\sqrt{4}``, ``\\frac{1}{2}\\cdot 3``) against a reference that has done it.
            ``refuse`` it (simple-evals' rubric: boxing the question's own expression is no
            answer); ``pay`` it when it evaluates to the reference (math-verify, symbolic graders).
            Fractions, mixed numbers, scientific notation, percentages and irrational radicals are
            answers, not unevaluated arithmetic.
        percent: ``strip``: ``10\\%`` equals ``10`` (MATH's "what percent"); ``either``: it also
            equals ``0.1`` (math-verify, MARIO, the VinePPO authors' grader).
        units: ``strip``: a trailing unit (``\\text{ cm}``, ``\\mbox{ inches}``, ``10 square units``,
            ``^\\circ``) is dropped before comparing; a glued short word (``10m``) is not a unit.
            ``refuse``: an answer whose unit text the other lacks is not equal.
        decimal_comma: read ``1000,99`` and ``0,111`` as decimals (math-verify). Off: a comma is a
            thousands separator in a proper grouping (``1,000``) and a list separator otherwise.
        multiple_choice: ``letter``: a reference that is a choice label (``C``, ``(C)``,
            ``\\text{(C)}``, ``C. x = 42``) is matched by the same letter in any of these forms,
            and by nothing else. ``math``: compared as math (math-verify reads ``\\text{(C)}`` as the
            symbol ``c`` and ``C. x = 42`` as 42).
        float_rounding: decimal places math-verify rounds floats to before comparing (its default 6).
    """

    extraction: Literal["boxed", "free"] = "boxed"
    boxes: Literal["join", "last"] = "join"
    comma_lists: Literal["ordered", "unordered", "question"] = "question"
    unevaluated: Literal["refuse", "pay"] = "refuse"
    percent: Literal["strip", "either"] = "strip"
    units: Literal["strip", "refuse"] = "strip"
    decimal_comma: bool = False
    multiple_choice: Literal["letter", "math"] = "letter"
    float_rounding: int = 6

    def __post_init__(self) -> None:
        _check_choices(self)
        if not isinstance(self.decimal_comma, bool):
            raise TypeError(f"MathPolicy.decimal_comma must be true or false; got {self.decimal_comma!r}")
        if not isinstance(self.float_rounding, int) or isinstance(self.float_rounding, bool) or not 0 <= self.float_rounding <= 15:
            raise ValueError(f"MathPolicy.float_rounding must be an integer in [0, 15]; got {self.float_rounding!r}")
