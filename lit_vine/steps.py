"""Split a response into reasoning steps (VinePPO, Kazemnejad et al. 2024, Sec. 4).

Both rules follow the VinePPO authors' code (McGill-NLP/VinePPO @ efe7228), which produced the
paper's tables: ``tasks/gsm8k.py`` for lines, ``tasks/math_extract_steps_inplace.py`` for MATH.
``benchmarks/math_steps.py`` measures how often :func:`split_math` cuts where that code cuts.

Every splitter returns pieces that join back to the input exactly, so a step boundary is a character
offset into the response; :func:`step_token_ends` maps those offsets onto the sampled token ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import pairwise

from transformers import PreTrainedTokenizerBase

GSM8K_ANSWER_PREFIX = "\n#### "


def split_lines(text: str, answer_prefix: str = GSM8K_ANSWER_PREFIX) -> list[str]:
    """GSM8K rule: one step per line.

    The newline starts the next step, so a state ``s_i`` ends just before it and the MC rollouts
    from it begin with the line break; a blank line is a step of its own. Leading blank lines
    belong to the first step. The answer (from the first ``answer_prefix`` on) and the blank lines
    before it belong to the last non-blank step, so the answer line is never a state of its own.
    """
    if not text:
        return []
    body, prefix, answer = text.partition(answer_prefix)
    lines = body.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    lines = ["\n".join(lines[: first + 1])] + lines[first + 1 :]
    if prefix:
        last = next((i for i in reversed(range(len(lines))) if lines[i].strip()), 0)
        lines = lines[:last] + ["\n".join(lines[last:]) + prefix + answer]
    return [lines[0]] + ["\n" + line for line in lines[1:]]


# ----- MATH -----------------------------------------------------------------------------------
# Math and code are found kind by kind, each kind on the text with the earlier kinds hidden, so a
# later kind never starts inside an earlier span (it may enclose one: the outer span is kept).
_MATH_SPANS = tuple(
    re.compile(pattern, re.S)
    for pattern in (
        r"\[asy\].*?\[/asy\]",  # Asymptote code
        r"\$\\begin\{tabular\}.*?\\end\{tabular\}\$",  # a tabular inside $...$
        r"\\begin\{tabular\}.*?\\end\{tabular\}",
        r"\\\(.*?\\\)",
        r"\\\[.*?\\\]",
        r"\$\$.*?\$\$",
        r"(?<!\\)\$.*?[^\\]\$(?!\$)",  # inline math: not \$, at least one character inside
        r"\\begin\{([^}]*)\}.*?\\end\{\1\}",  # any other environment (align, cases, ...)
    )
)
# The reference hides each span behind a 60-character placeholder and measures the first pass's
# pieces with it, so a line holding any math counts as at least 60 characters there.
_HIDDEN = "\ufffc" * 60
# A sentence end: a period, then whitespace and a capital; not after a one-letter word ("e.g.")
# or a two-letter one after a space ("Mr.", " is.").
_SENTENCE_END = re.compile(r"(?<=\.)(?<!\b[A-Za-z]\.)(?<!\s[A-Za-z]{2}\.)(?=\s+[A-Z])")
_MATH_PERIOD = (".$", ".$$", ".\\)", ".\\]")  # a math span ending a sentence
_LONE_OPENING = re.compile(r"\$|\$\$|\\\(|\\\[|\\begin\{[^}]*\}|\[asy\]")
# Where an over-long piece may break, each kind tried in turn, cut after the first `skip` chars:
# in prose (math hidden, each side >= 40 chars) and anywhere (each side >= 20 chars).
_PROSE_BREAKS = ((re.compile(","), 1), (re.compile(r"\sand\s"), 4), (re.compile(":"), 1), (re.compile(r"\sto\s"), 3))
_MATH_BREAKS = tuple(
    (re.compile(p), n)
    for p, n in ((r",\$", 2), (r",\\\)", 3), (r",\\\]", 3), ("=", 1), (r"\\equiv", 6), (r"\+", 1), (r"\\cancelto", 9))
)
SHORT, TINY, LONG, MIN_PROSE_SIDE, MIN_MATH_SIDE = 20, 3, 100, 40, 20


def split_math(text: str) -> list[str]:
    """MATH rule (the reference's ``split_solution_inplace``), in four passes:

    1. Cut at newlines (the newline starts the next piece) and sentence ends, never inside math
       (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``, environments, ``[asy]..[/asy]``); a piece
       under 20 characters that does not end in a period joins the next one.
    2. Cut after a math span that ends in a period (``.$``, ``.$$``, ``.\\)``, ``.\\]``); a piece under
       20 characters that does not end so joins the next one (the last joins the previous).
    3. Cut at every newline *inside* math (display math, aligned environments, ``[asy]`` code);
       a piece that is only an opening delimiter, or under 3 characters, joins the next one.
    4. Break pieces over 100 characters near their middle: in prose at ``,`` then `` and`` then
       ``:`` then `` to`` (math hidden, each side >= 40 characters), else anywhere at ``,$`` ...
       ``=``, ``\\equiv``, ``+`` (each side >= 20), again while they are too long.

    Where the reference fails (nested math, or a whole response under 20 characters that keeps no
    cut), it drops the response; here it becomes a single step.
    """
    if not text:
        return []
    spans = _math_spans(text)
    masked, origin = _hide(text, spans)
    bounds = _sentences_and_lines(masked)
    bounds = [origin[b] for b in bounds]
    bounds = _cut_after_math_periods(text, bounds, spans)
    bounds = _cut_lines_inside_math(text, bounds, spans)
    bounds = [bounds[0]] + [a + c for a, b in pairwise(bounds) for c in _break_long(text[a:b])[1:]]
    return [text[a:b] for a, b in pairwise(bounds)]


def _math_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for pattern in _MATH_SPANS:
        masked, origin = _hide(text, spans)
        found = [(origin[m.start()], origin[m.end()]) for m in pattern.finditer(masked)]
        spans = sorted(found + [(a, b) for a, b in spans if not any(s <= a and b <= e for s, e in found)])
    return spans


def _hide(text: str, spans: list[tuple[int, int]]) -> tuple[str, list[int]]:
    """``text`` with every span replaced by ``_HIDDEN``, and for each position of the result (and
    its end) the position in ``text`` it came from (a span's start for its hidden characters)."""
    pieces, origin, at = [], [], 0
    for start, end in spans:
        pieces += [text[at:start], _HIDDEN]
        origin += list(range(at, start)) + [start] * len(_HIDDEN)
        at = end
    pieces.append(text[at:])
    origin += list(range(at, len(text) + 1))
    return "".join(pieces), origin


def _join_short(bounds: list[int], short: Callable[[int, int], bool], last_too: bool) -> list[int]:
    """Remove the boundary after each piece ``short(start, end)`` picks, so it joins the next piece
    (pieces are re-examined after joining); with ``last_too`` a short last piece joins the previous."""
    bounds = sorted(set(bounds))
    i = 0
    while i < len(bounds) - (1 if last_too else 2):
        if not short(bounds[i], bounds[i + 1]):
            i += 1
        elif i < len(bounds) - 2:
            del bounds[i + 1]
        elif i > 0:
            del bounds[i]
        else:
            break
    return bounds


def _sentences_and_lines(masked: str) -> list[int]:
    cuts = {m.start() for m in _SENTENCE_END.finditer(masked)} | {m.start() for m in re.finditer("\n", masked)}
    piece = lambda a, b: masked[a:b]  # noqa: E731
    return _join_short([0, *cuts, len(masked)], lambda a, b: not piece(a, b).endswith(".") and b - a < SHORT, last_too=False)


def _cut_after_math_periods(text: str, bounds: list[int], spans: list[tuple[int, int]]) -> list[int]:
    cuts = {end for start, end in spans if text[start:end].endswith(_MATH_PERIOD)}
    return _join_short(bounds + sorted(cuts), lambda a, b: not text[a:b].endswith(_MATH_PERIOD) and b - a < SHORT, last_too=True)


def _cut_lines_inside_math(text: str, bounds: list[int], spans: list[tuple[int, int]]) -> list[int]:
    cuts = []
    for a, b in pairwise(bounds):
        seen = set()  # the reference expands a repeated span of one piece only once: its newlines cut once
        for start, end in spans:
            if a <= start and end <= b and text[start:end] not in seen:
                seen.add(text[start:end])
                cuts += [start + m.start() for m in re.finditer("\n", text[start:end])]
    lone = lambda a, b: b - a < TINY or _LONE_OPENING.fullmatch(text[a:b].strip()) is not None  # noqa: E731
    return _join_short(bounds + cuts, lone, last_too=True)


def _break_long(piece: str) -> list[int]:
    """Boundaries (relative to ``piece``) that break it toward at most 100 characters."""
    bounds = [0, len(piece)]
    if len(piece) <= LONG:
        return bounds
    # After a break inside math, the reference stops trying prose breaks for pieces starting in
    # [first math break, end of the piece broken there), both measured from the start of *that*
    # piece, not of `piece`; kept as it is, since the reference's steps are what we match.
    math_from, math_to = None, 0
    i = 0
    while i < len(bounds) - 1:
        a, b = bounds[i], bounds[i + 1]
        cut = None
        if b - a > LONG:
            if not (math_from is not None and math_from <= a < math_to):
                cut = _prose_break(piece[a:b])
            if cut is None:
                cut = _best_break(piece[a:b], piece[a:b], _MATH_BREAKS, lambda c: min(c, b - a - c) >= MIN_MATH_SIDE)
                if cut is not None:
                    math_from = cut if math_from is None else min(math_from, cut)
                    math_to = max(math_to, b - a)
        if cut is None:
            i += 1
        else:
            bounds.insert(i + 1, a + cut)
    return bounds


def _prose_break(part: str) -> int | None:
    masked, origin = _hide(part, _math_spans(part))
    cut = _best_break(masked, part, _PROSE_BREAKS, lambda c: min(origin[c], len(part) - origin[c]) >= MIN_PROSE_SIDE)
    return None if cut is None else origin[cut]


def _best_break(searched: str, part: str, kinds, long_enough: Callable[[int], bool]) -> int | None:
    """The cut of the first kind whose most central match leaves both sides long enough."""
    for pattern, skip in kinds:
        cuts = [m.start() + skip for m in pattern.finditer(searched)]
        if cuts:
            cut = min(cuts, key=lambda c: abs(2 * c - len(searched)))
            if long_enough(cut):
                return cut
    return None


def step_token_ends(
    response_ids: Sequence[int], steps: Sequence[str], tokenizer: PreTrainedTokenizerBase
) -> list[int]:
    """Token count at which each step ends: ``ends[i]`` tokens of the response cover steps 0..i.

    A boundary that falls inside a token is moved to the end of that token, so every state
    ``response_ids[:ends[i]]`` is a prefix the policy actually produced (the token belongs to the
    step it starts in, as in the reference, which gives a token the advantage of its first
    character). The last end is always ``len(response_ids)``; ends are strictly increasing (steps
    that collapse onto one token merge).
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
