"""Answer extraction and reward: 1.0 for a correct final answer, 0.0 otherwise (also when none)."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

logger = logging.getLogger(__name__)

# The text after the last "####" must be one number: "$", thousands commas, a unit or "%" and a
# final period allowed, nothing else. "#### 42 or 43", "#### 42 + 1", "#### 3/4" hold no answer, so a
# policy cannot hedge its way to a reward.
_ONE_NUMBER = re.compile(
    r"\$?\s*(?P<number>-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)\s*(?:%|[A-Za-z]+(?:\s+[A-Za-z]+)*)?\s*\.?"
)


def extract_gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####`` (commas dropped), if that is all there is; else ``None``."""
    head, sep, tail = text.rpartition("####")
    match = _ONE_NUMBER.fullmatch(tail.strip()) if sep else None
    return match["number"].replace(",", "") if match else None


def grade_gsm8k(response: str, answer: str) -> float:
    """Numeric comparison of the response's ``####`` answer with the reference answer."""
    predicted = extract_gsm8k_answer(response)
    if predicted is None:
        return 0.0
    try:
        return float(Fraction(predicted) == Fraction(answer.replace(",", "").strip()))
    except (ValueError, ZeroDivisionError):
        return 0.0


# ---------------------------------------------------------------------------------------------
# MATH: the final answer is the last \boxed{...}; equivalence by math-verify under a time limit.

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "The answer is $x$." / "final answer is 5" — the fallback when nothing is boxed.
_ANSWER_IS = re.compile(r"answer is[:\s]*(\$\$?)((?:\\.|[^$\\])+?)\1|answer is[:\s]*([^\s$][^\n]*?)\.?(?:\s*$|\.\s|\n)", re.I | re.S)
# A numeral with its base ("121_4", "4210_{5}"): math-verify reads it as the bare number.
_BASE_NUMERAL = re.compile(r"(\d[0-9A-Za-z]*)_\{?(\d+)\}?")
_NOISE = re.compile(r"\\left|\\right|\\[,;:! ]|\\displaystyle|\s+|\$")


def _braced(text: str, start: int) -> str | None:
    """Content of the balanced ``{...}`` group opening at ``text[start]``; ``None`` if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return None


def extract_math_answer(text: str) -> str | None:
    """The final answer of a MATH-style response: the last ``\\boxed{...}`` (or ``\\fbox{...}``,
    or ``\\boxed 5``), else the last "the answer is ..." phrase; ``None`` if there is neither.

    The result is the raw LaTeX, stripped; majority voting compares it after
    :func:`normalize_math_answer`.
    """
    for match in reversed(list(_BOX_COMMAND.finditer(text))):
        rest = match.end()
        if text[rest : rest + 1] == "{":
            content = _braced(text, rest)
        else:  # "\boxed 5": the argument is the next token, up to a space or the closing $
            content = re.match(r"\s*([^\s$]*)", text[rest:]).group(1)
        if content and content.strip():
            return content.strip()
    phrases = list(_ANSWER_IS.finditer(text))
    if phrases:
        last = phrases[-1]
        content = (last.group(2) or last.group(3) or "").strip()
        return content or None
    return None


def base_numeral(answer: str) -> tuple[str, str] | None:
    """``(digits, base)`` of an answer written as a numeral with a base subscript, else ``None``."""
    match = _BASE_NUMERAL.fullmatch(normalize_math_answer(answer))
    return (match[1].upper(), match[2]) if match else None


def normalize_math_answer(answer: str) -> str:
    """A light canonical form for cheap string equality: no spaces, ``$``, ``\\left``/``\\right``,
    spacing commands or trailing period, and ``\\dfrac``/``\\tfrac`` read as ``\\frac``."""
    text = _NOISE.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


class GraderTimeout(Exception):
    """The equivalence check ran past its time limit."""


class MathGrader:
    """MATH reward: 1.0 if the response's final answer is equivalent to the reference answer.

    Equal normalized strings are accepted at once (the common case, no sympy); a numeral with a
    base must match digits and base. Otherwise math-verify parses and compares both in a worker
    process, so a pathological expression (a huge expansion, an uninterruptible big-integer power)
    is killed after ``time_limit`` seconds wherever the caller runs; math-verify's own
    ``signal.alarm`` timeout works only in the main thread and cannot interrupt C code. A timeout
    scores 0 and is counted in ``timeouts``.

    Verdicts are memoized per (reference, extracted answer) for the grader's life: the Monte Carlo
    continuations of an iteration repeat a few answers many times. :meth:`grade_many` sends the
    comparisons it does not know yet to a pool of ``workers`` processes at once, each under its own
    time limit. Workers start on first use (importing sympy takes seconds; that is not charged to a
    comparison) and are restarted after a timeout.

    Args:
        time_limit: seconds allowed for one comparison.
        workers: math-verify processes; ``None``: one per core.
        memoize: keep verdicts (a timeout's 0 included) for the grader's life.
    """

    _STARTUP_LIMIT = 120.0

    def __init__(self, time_limit: float = 5.0, workers: int | None = None, memoize: bool = True) -> None:
        if time_limit <= 0:
            raise ValueError(f"grader time_limit must be > 0, got {time_limit}")
        if workers is not None and workers < 1:
            raise ValueError(f"grader workers must be >= 1, got {workers}")
        self.time_limit, self.memoize = time_limit, memoize
        self.workers = workers or os.cpu_count() or 1
        self.timeouts = 0
        self._pool: list[subprocess.Popen | None] = [None] * self.workers
        self._verdicts: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def __call__(self, response: str, answer: str) -> float:
        return self.grade_many([(response, answer)])[0]

    def grade_many(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Rewards of ``(response, reference answer)`` pairs, the math-verify comparisons of all of
        them run together."""
        rewards: list[float | tuple[str, str]] = []
        for response, answer in pairs:
            predicted = extract_math_answer(response)
            if predicted is None:
                rewards.append(0.0)
            elif normalize_math_answer(predicted) == normalize_math_answer(answer):
                rewards.append(1.0)
            elif (bases := (base_numeral(predicted), base_numeral(answer))) != (None, None):
                rewards.append(float(bases[0] == bases[1]))  # same digits in the same base, or wrong
            else:
                rewards.append((answer, predicted))
        keys = list(dict.fromkeys(r for r in rewards if isinstance(r, tuple)))
        with self._lock:
            verdicts = self._compare(keys)
        return [float(verdicts[r]) if isinstance(r, tuple) else r for r in rewards]

    def equivalent(self, gold: str, predicted: str) -> bool:
        """math-verify equivalence of two LaTeX answers; raises :class:`GraderTimeout`."""
        with self._lock:
            before = self.timeouts
            verdict = self._compare([(gold, predicted)])[(gold, predicted)]
        if self.timeouts > before:
            raise GraderTimeout(f"no verdict within {self.time_limit}s")
        return verdict

    def _compare(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """Verdicts for ``(gold, predicted)`` keys: memoized, or from the pool (a timeout is False)."""
        verdicts = {key: self._verdicts[key] for key in keys if key in self._verdicts}
        pending = [key for key in keys if key not in verdicts]
        busy: dict[int, tuple[tuple[str, str], float]] = {}  # worker -> (key, deadline)
        if pending:
            self._start(range(min(self.workers, len(pending))))
        while pending or busy:
            for w in range(self.workers):
                if pending and w not in busy:
                    self._start([w])
                    key = pending.pop()
                    self._pool[w].stdin.write(json.dumps(list(key)) + "\n")
                    self._pool[w].stdin.flush()
                    busy[w] = (key, time.monotonic() + self.time_limit)
            wait = max(0.0, min(deadline for _, deadline in busy.values()) - time.monotonic())
            ready, _, _ = select.select([self._pool[w].stdout for w in busy], [], [], wait)
            for w in list(busy):
                key, deadline = busy[w]
                if self._pool[w].stdout in ready:
                    line = self._pool[w].stdout.readline().strip()
                    verdicts[key] = line == "1"
                    if not line:  # the worker died on it: the next use starts a fresh one
                        self._stop(w)
                elif time.monotonic() >= deadline:
                    verdicts[key] = False
                    self.timeouts += 1
                    logger.warning("MATH grader: comparison timed out after %.1fs (%d so far)", self.time_limit, self.timeouts)
                    self._stop(w)
                else:
                    continue
                del busy[w]
        if self.memoize:
            self._verdicts.update(verdicts)
        return verdicts

    def _start(self, which) -> None:
        """Start the workers in ``which`` that are not running, all at once (each imports sympy)."""
        started = []
        for w in which:
            if self._pool[w] is None or self._pool[w].poll() is not None:
                self._pool[w] = subprocess.Popen(
                    [sys.executable, "-u", str(Path(__file__).with_name("_verify_worker.py"))],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )
                started.append(w)
        for w in started:
            worker = self._pool[w]
            ready, _, _ = select.select([worker.stdout], [], [], self._STARTUP_LIMIT)
            if not ready or worker.stdout.readline().strip() != "ready":
                self._stop(w)
                raise RuntimeError("MATH grader: the math-verify worker process failed to start")

    def _stop(self, w: int) -> None:
        if self._pool[w] is not None:
            self._pool[w].kill()
            self._pool[w].wait()
            self._pool[w] = None

    def close(self) -> None:
        """Stop the workers (a later call starts fresh ones)."""
        for w in range(self.workers):
            self._stop(w)

    def __getstate__(self) -> dict:
        # Copies (DDP spawn, deepcopy) get their own workers, lock and memo.
        return {"time_limit": self.time_limit, "workers": self.workers, "memoize": self.memoize, "timeouts": self.timeouts}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["time_limit"], state["workers"], state["memoize"])
        self.timeouts = state["timeouts"]

    def __del__(self) -> None:
        if getattr(self, "_pool", None):
            self.close()


_default_math_grader: MathGrader | None = None


def grade_math(response: str, answer: str) -> float:
    """MATH reward with the default 5 s limit (one shared worker per process)."""
    global _default_math_grader
    if _default_math_grader is None:
        _default_math_grader = MathGrader()
    return _default_math_grader(response, answer)
