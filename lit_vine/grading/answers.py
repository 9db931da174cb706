"""Reading the final answer of a MATH-style text: its boxes, or a closing "the answer is" phrase."""

from __future__ import annotations

import re
from typing import Literal

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_ARGUMENT = re.compile(r"\s*([^\s$]*)")  # "\boxed 5": the next token, up to a space or the closing $
# "The answer is $x$." / "final answer is 5" — the fallback when nothing is boxed.
_ANSWER_IS = re.compile(
    r"answer is[:\s]*(\$\$?)((?:\\.|[^$\\])+?)\1|answer is[:\s]*([^\s$][^\n]*?)\.?(?:\s*$|\.\s|\n)", re.IGNORECASE | re.DOTALL
)
# A numeral with its base ("121_4", "4210_{5}"): math-verify reads it as the bare number.
_BASE_NUMERAL = re.compile(r"(\d[0-9A-Za-z]*)_\{?(\d+)\}?")
_NOISE = re.compile(r"\\left|\\right|\\[,;:! ]|\\displaystyle|\s+|\$")
# What may stand between two boxes that are parts of one answer, once math delimiters, spacing
# commands and \text{} wrappers are gone: nothing, a comma or semicolon, or a few words ending in
# "and" ("\boxed{6} and \boxed{8}", "\boxed{1} papers and \boxed{2}"), then perhaps the next part's
# label ("\boxed{a} and y_2 = \boxed{b}"). A sentence end, "or" or longer prose ("wait, it is
# \boxed{5}") starts a new answer, so a corrected answer is read alone.
_GAP_MARKUP = re.compile(r"\\text\{([^{}]*)\}|\\[()\[\]]|\\q?quad|\\[,;:! ]|~|\$")
_CONNECTOR = re.compile(r"[,;]?\s*(?:(?:[A-Za-z()]+\s+){0,3}and)?\s*[,;]?\s*(?:[A-Za-z](?:_\{?\w+\}?)?\s*=)?", re.IGNORECASE)
_MATH_DELIMITERS = re.compile(r"^\s*(?:\$\$(.*)\$\$|\$(.*)\$|\\\[(.*)\\\]|\\\((.*)\\\))\s*\.?\s*$", re.DOTALL)


def _braced(text: str, start: int) -> str | None:
    """Content of the balanced ``{...}`` group opening at ``text[start]``; ``None`` if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return None


def boxes(text: str) -> list[tuple[int, int, str]]:
    """The outermost ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5`` of ``text`` in order, as
    ``(start, end, content)``; empty and unclosed boxes are left out."""
    found, resume = [], 0
    for match in _BOX_COMMAND.finditer(text):
        if match.start() < resume:  # inside a box already read
            continue
        rest = match.end()
        if text[rest : rest + 1] == "{":
            content = _braced(text, rest)
            end = rest + len(content) + 2 if content is not None else rest
        else:
            token = _BARE_ARGUMENT.match(text, rest)
            content, end = token.group(1), token.end()
        if content and content.strip():
            found.append((match.start(), end, content.strip()))
            resume = end
    return found


def _joins(gap: str) -> bool:
    """Whether the text between two boxes only connects the parts of one answer."""
    return _CONNECTOR.fullmatch(_GAP_MARKUP.sub(lambda m: m.group(1) or " ", gap).strip()) is not None


def extract_math_answer(text: str, boxes_mode: Literal["join", "last"] = "join") -> str | None:
    """The final answer of a MATH-style response: the last ``\\boxed{...}`` (``\\fbox``, ``\\boxed 5``);
    with ``boxes_mode="join"`` the boxes before it that only a connector separates are parts of the
    same answer, read as the list ``a, b``. With no box, the last "the answer is ..." phrase; ``None``
    if there is neither.

    The result is the raw LaTeX, stripped; majority voting compares it after
    :func:`normalize_math_answer`.
    """
    found = boxes(text)
    if found:
        parts = [found[-1]]
        while boxes_mode == "join" and len(parts) < len(found) and _joins(text[found[-len(parts) - 1][1] : parts[0][0]]):
            parts.insert(0, found[-len(parts) - 1])
        return ", ".join(content for _, _, content in parts)
    phrases = list(_ANSWER_IS.finditer(text))
    if phrases:
        last = phrases[-1]
        content = (last.group(2) or last.group(3) or "").strip()
        return content or None
    return None


def reference_answer(reference: str, boxes_mode: Literal["join", "last"] = "join") -> str:
    """A reference as the graders compare it: the final answer of a worked solution (its boxes, else
    its "the answer is" phrase), else the answer itself with enclosing math delimiters (``$...$``,
    ``\\(...\\)``, ``\\[...\\]``) removed."""
    if boxes(reference) or _ANSWER_IS.search(reference):
        return extract_math_answer(reference, boxes_mode) or reference.strip()
    match = _MATH_DELIMITERS.match(reference)
    if match and "$" not in next(g for g in match.groups() if g is not None).replace("\\$", ""):
        return next(g for g in match.groups() if g is not None).strip()
    return reference.strip()


def as_math_text(reference: str) -> str:
    """A reference as math-verify's own reading expects it: its math delimited (``$...$`` added
    when it has no delimiter or box of its own)."""
    return reference if boxes(reference) or re.search(r"\$|\\[(\[]", reference) else f"${reference}$"


def base_numeral(answer: str) -> tuple[str, str] | None:
    """``(digits, base)`` of an answer written as a numeral with a base subscript, else ``None``."""
    match = _BASE_NUMERAL.fullmatch(normalize_math_answer(answer))
    return (match[1].upper(), match[2]) if match else None


def normalize_math_answer(answer: str) -> str:
    """A light canonical form for cheap string equality: no spaces, ``$``, ``\\left``/``\\right``,
    spacing commands or trailing period, and ``\\dfrac``/``\\tfrac`` read as ``\\frac``."""
    text = _NOISE.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")
