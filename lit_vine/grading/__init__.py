"""Answer reading and rewards: 1.0 for a correct final answer, 0.0 otherwise (also when none).

- :mod:`~lit_vine.grading.policy`: the named options of each grader (what is paid, what refused).
- :mod:`~lit_vine.grading.gsm8k`: the ``#### answer`` line, compared exactly.
- :mod:`~lit_vine.grading.answers`: a MATH-style text's final answer (its boxes).
- :mod:`~lit_vine.grading.notation`: units, percent signs, digit grouping, list connectors, choice letters.
- :mod:`~lit_vine.grading.equivalence`: math-verify and the guards around it (in worker processes).
- :mod:`~lit_vine.grading.math_grader`: the MATH reward, its worker pool and time limit.
"""

from lit_vine.grading.answers import base_numeral, extract_math_answer, normalize_math_answer, reference_answer
from lit_vine.grading.gsm8k import extract_gsm8k_answer, grade_gsm8k
from lit_vine.grading.math_grader import GraderTimeout, MathGrader, grade_math
from lit_vine.grading.policy import GSM8KPolicy, MathPolicy

__all__ = [
    "GSM8KPolicy",
    "GraderTimeout",
    "MathGrader",
    "MathPolicy",
    "base_numeral",
    "extract_gsm8k_answer",
    "extract_math_answer",
    "grade_gsm8k",
    "grade_math",
    "normalize_math_answer",
    "reference_answer",
]
