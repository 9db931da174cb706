"""How an answer is written, apart from its value: units, percent signs, digit grouping, list
connectors, choice letters. Plain string work (no sympy), done before math-verify sees an answer."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lit_vine.grading.policy import MathPolicy

# A single-letter \mathrm{e} is the constant or variable, not a unit: math-verify would drop it as
# one and read "1-\frac{1}{\mathrm{e}}" as 1.
_UPRIGHT_LETTER = re.compile(r"\\(?:mathrm|mathit|operatorname|rm)\s*\{\s*([A-Za-z])\s*\}")
_CURRENCY = re.compile(r"\\\$|\$|\\text\{\s*\\?\$\s*\}")
# "10,\!080", "14{,}916", "1\,000": thousands grouped by a comma, a thin space or a space.
_GROUP_MARKUP = re.compile(r",\\!\s*|\{,\}")
_NEGATIVE_SPACE = re.compile(r"\\!")
_THOUSANDS = re.compile(r"(?<![\d.,])(-?[1-9]\d{0,2})((?:,\d{3})+|(?:(?:\\,|\\ |~| )\d{3})+)(?![\d,])")
_DECIMAL_COMMA = re.compile(r"(-?\d+),(\d+)")
_PERCENT_WORD = r"(?:percent(?:age)?|pct)"
_PERCENT = re.compile(rf"\s*(?:\\%|%|\\text\{{\s*(?:\\?%|{_PERCENT_WORD})\s*\}}|{_PERCENT_WORD})\s*$")
_TEXT_UNIT = re.compile(r"\s*\\(?:text|textbf|textit|textnormal|textrm|mbox|mathrm|rm)\s*\{[^{}]*\}\s*(?:\^\s*\{?\d\}?)?\s*$")
_DEGREES = re.compile(r"\s*\^\s*\{?\\circ\}?\s*$|\s*\\circ\s*$|\s*\\degree\s*$")
# Plain unit words after a number: "10 square units", "10 cm^2", "10weeks" (glued: three letters
# or more, so "10m" stays 10 times m).
_MATH_WORD = r"(?!(?:pi|sin|cos|tan|sec|csc|cot|log|ln|exp|mod|sqrt|choose|infty|inf)\b)"
_WORD_UNIT = re.compile(
    rf"(?<=[\d}}.)])(?:\s+{_MATH_WORD}[A-Za-z]{{2,}}(?:\s+[A-Za-z]{{2,}})*|{_MATH_WORD}[A-Za-z]{{3,}})\s*(?:\^\s*\{{?\d\}}?)?\s*$"
)
_UNITS = (_TEXT_UNIT, _DEGREES, _WORD_UNIT)  # what may trail an answer as its unit
_AND = re.compile(r"\s*,?\s*(?:\\q?quad\s*)?(?:\\text\{\s*,?\s*(?:and|or)\s*\}|(?<![A-Za-z\\])(?:and|or)(?![A-Za-z]))(?:\s*\\q?quad)?\s*")
_CHOICE = re.compile(
    r"\(?([A-E])\)?"  # C, (C)
    r"|\\text(?:bf)?\{\s*\(?([A-E])\)?\s*\}"  # \text{(C)}, \textbf{C}
    r"|\(?([A-E])[.):]\s.*",  # C. x = 42, (C) 42
    re.DOTALL,
)
_LABELLED = re.compile(r"(?:\\q?quad|\\[,;:! ]|\s)*[A-Za-z](?:_\{?\w+\}?)?\s*=[^=]+")
_MIXED_NUMBER = re.compile(r"(-?\d+)\s+(\d+)\s*/\s*(\d+)")
_SET_WORDING = re.compile(r"separated by commas", re.IGNORECASE)
_OPENERS, _CLOSERS = "([{", ")]}"


@dataclass(frozen=True)
class Written:
    """An answer ready for comparison: the text math-verify will see and what was taken off it."""

    text: str
    percent: bool = False
    unit: str = ""


def top_level_split(text: str) -> list[str]:
    """``text`` split at the commas outside every bracket (``\\{...\\}``, ``\\left(`` included)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts if len(parts) > 1 and all(parts) else [text.strip()]


def ordered_lists(gold: str, predicted: str) -> bool:
    """Whether two answers are bare comma lists that order makes different: both are lists (a list
    against a set ``\\{...\\}`` or one value is left to math-verify) and their items are not all
    labelled (``a_3 = 2, a_{37} = 19``: the labels say which is which, in any order)."""
    items = top_level_split(gold) + top_level_split(predicted)
    lists = len(top_level_split(gold)) > 1 and len(top_level_split(predicted)) > 1
    return lists and not all(_LABELLED.fullmatch(item) for item in items)


def _connect_with_commas(text: str) -> str:
    """``6 \\text{ and } 8`` -> ``6, 8``: "and" or "or" between the parts of an answer, outside brackets
    (as math-verify reads them). A hedge "5 or 6" thus becomes a list, which no single answer equals."""
    depth, out, i = 0, [], 0
    while i < len(text):
        match = _AND.match(text, i) if depth == 0 and i > 0 else None
        if match and match.end() < len(text) and match.end() > i:
            out.append(", ")
            i = match.end()
            continue
        depth += (text[i] in _OPENERS) - (text[i] in _CLOSERS)
        out.append(text[i])
        i += 1
    return "".join(out)


def choice_letter(answer: str) -> str | None:
    """The letter of a multiple-choice label (``C``, ``(C)``, ``\\text{(C)}``, ``C. x = 42``), else ``None``."""
    match = _CHOICE.fullmatch(_UPRIGHT_LETTER.sub(r"\1", answer.strip()).rstrip("."))
    return next((g for g in match.groups() if g), None) if match else None


def asks_for_set(question: str | None) -> bool:
    """Whether a question asks for its values "separated by commas" (MATH's "enter all the solutions")."""
    return bool(question) and _SET_WORDING.search(question) is not None


def written(answer: str, policy: MathPolicy) -> Written:
    """``answer`` with its notation settled: currency signs and digit grouping dropped, a decimal
    comma read as ``policy.decimal_comma`` says, the percent sign and trailing unit taken off (and
    recorded), and "and" between parts turned into a comma."""
    text = _UPRIGHT_LETTER.sub(r"\1", answer.strip()).rstrip(" .;")
    text = _CURRENCY.sub("", text).strip()
    text = _NEGATIVE_SPACE.sub("", _GROUP_MARKUP.sub(",", text))
    text = _THOUSANDS.sub(lambda m: m[1] + re.sub(r"\D", "", m[2]), text)
    if policy.decimal_comma and _DECIMAL_COMMA.fullmatch(text):
        text = _DECIMAL_COMMA.sub(r"\1.\2", text)
    if _MIXED_NUMBER.fullmatch(text):  # "1 1/2" is one and a half, as 1\frac12 is to math-verify
        text = _MIXED_NUMBER.sub(r"\1\\frac{\2}{\3}", text)
    percent = _PERCENT.search(text)
    if percent:
        text = text[: percent.start()]
    unit = ""
    while True:  # "5\text{ cm}^2", "90^\circ", "10 square units": trailing units, one at a time
        match = next((m for m in (p.search(text) for p in _UNITS) if m and m.start() > 0), None)
        if match is None:
            break
        unit = text[match.start() :].strip() + unit
        text = text[: match.start()].rstrip()
    return Written(_connect_with_commas(text).strip(), percent=bool(percent), unit=re.sub(r"\s+", " ", unit))
