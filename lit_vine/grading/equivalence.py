"""Answer equivalence by math-verify, with lit-vine's guards. Runs in the grader's worker processes
(``_worker.py`` imports it by file location), so it imports math-verify and sympy but nothing of
``lit_vine``.

A request compares alternatives: each side is a list of written forms, each form a list of items
(one item for a single answer, several for a list compared item by item). Equal when some gold form
and some predicted form have as many items and every item pair is equivalent.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter

import sympy
from math_verify import parse, verify

logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": the parent owns the limit

_COMMAND = re.compile(r"\\[A-Za-z]+")
_ARITHMETIC = (sympy.Add, sympy.Mul, sympy.Pow, sympy.factorial)


def content(latex: str, digits: bool = True) -> Counter:
    """The letters and primes (and ``digits``) of a LaTeX string, command names aside, case folded."""
    text = _COMMAND.sub(" ", latex).lower()
    return Counter(ch for ch in text if ch.isalpha() or ch == "'" or (digits and ch.isdigit()))


def parsed_short(written: str, extracted: str) -> bool:
    """Whether math-verify parsed less than was written: a letter, prime or digit of ``written`` is
    missing from the part it ``extracted`` (its normalized LaTeX), or that part stops inside a brace
    group. Digits are not compared when ``written`` has a decimal point: math-verify rewrites
    ``0.5`` as ``\\frac{1}{2}``.

    math-verify reads what it can and drops the rest (``1-\\frac{1}{\\mathrm{e}}`` as ``1``, ``f'(x)``
    as ``f(x)``, ``3\\mathrm{e}^2`` as ``3``); equal short readings say nothing about the answers.
    """
    digits = "." not in written
    missing = content(written, digits) - content(extracted, digits)
    return bool(missing) or extracted.count("{") != extracted.count("}")


def _ten_power(node: sympy.Basic) -> bool:
    return isinstance(node, sympy.Pow) and node.base == 10 and node.exp.is_Integer


def _scientific(node: sympy.Basic) -> bool:
    """``10^{k}`` or ``m \\times 10^{k}``: how a number is written, not arithmetic left undone."""
    if _ten_power(node):
        return True
    args = node.args
    return isinstance(node, sympy.Mul) and len(args) == 2 and any(map(_ten_power, args)) and any(a.is_Number for a in args)


def undone_arithmetic(expr: sympy.Basic) -> bool:
    """Whether ``expr`` holds number arithmetic that evaluates to a rational but was not carried out:
    ``17\\cdot 23``, ``2^{10}``, ``\\sqrt{4}``, ``5!``, ``\\frac12\\cdot 3``. Fractions and mixed numbers
    arrive evaluated from the parser; irrational values (``3\\sqrt{2}``, ``2\\pi``) are answers."""
    for node in sympy.preorder_traversal(expr):
        if (
            isinstance(node, _ARITHMETIC)
            and not node.free_symbols
            and not node.has(sympy.UnevaluatedExpr)  # a percent sign: 28 \cdot (1/100)
            and not _scientific(node)
            and node.is_rational
        ):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def read(latex: str) -> list | None:
    """math-verify's reading of one answer (``[sympy expression, extracted string]``), or ``None`` when
    there is none or it is short of what was written."""
    parsed = parse(f"${latex}$", parsing_timeout=None)
    if len(parsed) < 2 or parsed_short(latex, parsed[1]):
        return None
    return parsed


def items_equal(gold: str, pred: str, unevaluated: str, float_rounding: int) -> bool:
    """One gold item against one predicted item under the guards."""
    g, p = read(gold), read(pred)
    if g is None or p is None:
        return False
    if unevaluated == "refuse" and undone_arithmetic(p[0]) and not undone_arithmetic(g[0]):
        return False
    return verify(g, p, float_rounding=float_rounding, timeout_seconds=None)


def equal(
    golds: list[list[str]], preds: list[list[str]], unevaluated: str = "refuse", float_rounding: int = 6, free: bool = False
) -> bool:
    """Whether some gold form equals some predicted form (see the module docstring). ``free``: the
    forms are whole texts that math-verify reads and compares its own way, without the guards."""
    if free:
        texts = [(parse(g[0], parsing_timeout=None), parse(p[0], parsing_timeout=None)) for g in golds for p in preds]
        return any(verify(g, p, float_rounding=float_rounding, timeout_seconds=None) for g, p in texts)
    return any(
        len(g) == len(p) and all(items_equal(a, b, unevaluated, float_rounding) for a, b in zip(g, p))
        for g in golds
        for p in preds
    )
