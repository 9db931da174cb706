"""Split a response into reasoning steps (VinePPO, Kazemnejad et al. 2024, Sec. 4).

Every splitter returns pieces that join back to the input exactly, so a step boundary is a character
offset into the response; :func:`step_token_ends` maps those offsets onto the sampled token ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase


def split_lines(text: str) -> list[str]:
    """GSM8K rule: one step per line.

    Leading empty pieces are merged into the first step and a final ``#### answer`` line into the
    last step, so the answer line never becomes a state of its own.
    """
    pieces = text.splitlines(keepends=True)
    steps: list[str] = []
    for piece in pieces:
        if steps and (not steps[-1].strip() or piece.lstrip().startswith("####")):
            steps[-1] += piece
        else:
            steps.append(piece)
    return steps


# Spans a cut must never enter, in the order tried at each position: asy code, environments,
# display math, then inline math (``$`` not escaped, content may hold ``\\$``).
_PROTECTED = re.compile(
    r"\[asy\].*?\[/asy\]"
    r"|\\begin\{([A-Za-z*]+)\}.*?\\end\{\1\}"
    r"|\$\$.*?\$\$"
    r"|(?<!\\)\\\[.*?\\\]"
    r"|(?<!\\)\\\(.*?\\\)"
    r"|(?<!\\)\$(?:\\.|[^$\\])+\$",
    re.S,
)
# Sentence end: a period (not after a one-letter word such as "e.g." or an initial) followed by
# whitespace and a capital letter. The cut goes after the period: the space starts the next step,
# as a word-initial space does in most tokenizers.
_SENTENCE_END = re.compile(r"(?<![\s.][A-Za-z])\.(?=[ \t]+[A-Z])")  # a newline after it is a newline cut
_PERIOD_ENDINGS = (".", ".$", ".$$", ".\\]", ".\\)")
_LANGUAGE_CUTS = re.compile(r"(?<=, )|(?= and )|(?<=:)")
_OPERATOR_CUTS = re.compile(r"(?=[=+<>])")
MIN_STEP_CHARS, MAX_STEP_CHARS = 20, 100


def split_math(text: str) -> list[str]:
    """MATH rule (VinePPO's reference heuristics): steps end at newlines and sentence ends.

    - A cut never falls inside ``$...$``, ``$$...$$``, ``\\[...\\]``, ``\\(...\\)``,
      ``\\begin{env}...\\end{env}`` or ``[asy]...[/asy]``; a math span ending in a period
      (``.$``) followed by a capitalised sentence also ends a step. A run of newlines stays with
      the step it ends.
    - A piece shorter than 20 characters that does not end in a period (``.`` / ``.$`` ...) is merged
      into the next one (the last into the previous), so no step is a stray fragment.
    - A piece over 100 characters is cut near its middle at ``, `` / `` and `` / ``:`` or, failing
      those, before a ``=``/``+``/``<``/``>`` outside math, where both halves keep 20 characters;
      the halves are cut again while they are too long and can be.
    """
    if not text:
        return []
    spans = [m.span() for m in _PROTECTED.finditer(text)]

    def outside(position: int) -> bool:
        return not any(start < position < end for start, end in spans)

    cuts = {m.end() for m in re.finditer(r"\n+", text)}
    cuts |= {m.end() for m in _SENTENCE_END.finditer(text)}
    cuts |= {b for a, b in spans if text[a:b].endswith(_PERIOD_ENDINGS[1:]) and re.match(r"[ \t]+[A-Z]", text[b:])}
    bounds = _merge_short(text, [0] + sorted(c for c in cuts if 0 < c < len(text) and outside(c)) + [len(text)])
    bounds = [bounds[0]] + [c for a, b in zip(bounds, bounds[1:]) for c in _halve_long(text, a, b, outside) + [b]]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _ends_sentence(piece: str) -> bool:
    return piece.rstrip().endswith(_PERIOD_ENDINGS)


def _merge_short(text: str, bounds: list[int]) -> list[int]:
    """Drop the boundaries that end a short, period-less piece (it joins the next piece)."""
    kept = [bounds[0]]
    for b in bounds[1:-1]:
        piece = text[kept[-1] : b]
        if len(piece) >= MIN_STEP_CHARS or _ends_sentence(piece):
            kept.append(b)
    last = text[kept[-1] :]
    if len(kept) > 1 and len(last) < MIN_STEP_CHARS and not _ends_sentence(last):
        kept.pop()  # nothing follows the last piece: it joins the previous one
    return kept + [bounds[-1]]


def _halve_long(text: str, a: int, b: int, outside: Callable[[int], bool]) -> list[int]:
    """Cut positions strictly inside ``text[a:b]`` that bring its pieces toward MAX_STEP_CHARS."""
    if b - a <= MAX_STEP_CHARS:
        return []
    for pattern in (_LANGUAGE_CUTS, _OPERATOR_CUTS):
        options = [
            m.start() for m in pattern.finditer(text, a, b)
            if a + MIN_STEP_CHARS <= m.start() <= b - MIN_STEP_CHARS and outside(m.start())
        ]
        if options:
            cut = min(options, key=lambda c: abs(2 * c - a - b))
            return _halve_long(text, a, cut, outside) + [cut] + _halve_long(text, cut, b, outside)
    return []


def step_token_ends(
    response_ids: Sequence[int], steps: Sequence[str], tokenizer: PreTrainedTokenizerBase
) -> list[int]:
    """Token count at which each step ends: ``ends[i]`` tokens of the response cover steps 0..i.

    A boundary that falls inside a token is moved to the end of that token, so every state
    ``response_ids[:ends[i]]`` is a prefix the policy actually produced. The last end is always
    ``len(response_ids)``; ends are strictly increasing (steps that collapse onto one token merge).
    """
    n = len(response_ids)
    prefix_len = {0: 0}

    def decoded_len(k: int) -> int:
        if k not in prefix_len:
            prefix_len[k] = len(tokenizer.decode(response_ids[:k], skip_special_tokens=True))
        return prefix_len[k]

    ends: list[int] = []
    offset = 0
    for step in steps[:-1]:
        offset += len(step)
        lo, hi = (ends[-1] if ends else 0), n  # smallest k with decoded_len(k) >= offset
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_len(mid) >= offset:
                hi = mid
            else:
                lo = mid + 1
        if 0 < lo < n and (not ends or lo > ends[-1]):
            ends.append(lo)
    ends.append(n)
    return ends
