"""Answer extraction and reward: 1.0 for a correct final answer, 0.0 otherwise (also when none)."""

from __future__ import annotations

import json
import logging
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# MATH: the final answer is the last \boxed{...}; equivalence by math-verify under a time limit.

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "The answer is $x$." / "final answer is 5" — the fallback when nothing is boxed.
_ANSWER_IS = re.compile(r"answer is[:\s]*(\$\$?)(.+?)\1|answer is[:\s]*([^\s$][^\n]*?)\.?(?:\s*$|\.\s|\n)", re.I | re.S)
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


def normalize_math_answer(answer: str) -> str:
    """A light canonical form for cheap string equality: no spaces, ``$``, ``\\left``/``\\right``,
    spacing commands or trailing period, and ``\\dfrac``/``\\tfrac`` read as ``\\frac``."""
    text = _NOISE.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


class GraderTimeout(Exception):
    """The equivalence check ran past its time limit."""


class MathGrader:
    """MATH reward: 1.0 if the response's final answer is equivalent to the reference answer.

    Equal normalized strings are accepted at once (the common case, no sympy). Otherwise
    math-verify parses and compares both in a worker process, so a pathological expression (a
    huge expansion, an uninterruptible big-integer power) is killed after ``time_limit`` seconds
    wherever the caller runs; math-verify's own ``signal.alarm`` timeout works only in the main
    thread and cannot interrupt C code. A timeout scores 0 and is counted in ``timeouts``. The
    worker starts on first use (importing sympy takes seconds; that is not charged to a call)
    and is restarted after a timeout.

    Args:
        time_limit: seconds allowed for one comparison.
    """

    _STARTUP_LIMIT = 120.0

    def __init__(self, time_limit: float = 5.0) -> None:
        if time_limit <= 0:
            raise ValueError(f"grader time_limit must be > 0, got {time_limit}")
        self.time_limit = time_limit
        self.timeouts = 0
        self._worker: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __call__(self, response: str, answer: str) -> float:
        predicted = extract_math_answer(response)
        if predicted is None:
            return 0.0
        if normalize_math_answer(predicted) == normalize_math_answer(answer):
            return 1.0
        try:
            return float(self.equivalent(answer, predicted))
        except GraderTimeout:
            self.timeouts += 1
            logger.warning("MATH grader: comparison timed out after %.1fs (%d so far)", self.time_limit, self.timeouts)
            return 0.0

    def equivalent(self, gold: str, predicted: str) -> bool:
        """math-verify equivalence of two LaTeX answers; raises :class:`GraderTimeout`."""
        with self._lock:  # one request in flight per worker
            worker = self._start()
            worker.stdin.write(json.dumps([gold, predicted]) + "\n")
            worker.stdin.flush()
            reply = self._read_line(worker, self.time_limit)
            if reply is None:
                self.close()
                raise GraderTimeout(f"no verdict within {self.time_limit}s")
            return reply == "1"

    def _start(self) -> subprocess.Popen:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = subprocess.Popen(
                [sys.executable, "-u", str(Path(__file__).with_name("_verify_worker.py"))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            if self._read_line(self._worker, self._STARTUP_LIMIT) != "ready":
                self.close()
                raise RuntimeError("MATH grader: the math-verify worker process failed to start")
        return self._worker

    @staticmethod
    def _read_line(worker: subprocess.Popen, limit: float) -> str | None:
        """The worker's next line, or ``None`` if none arrives within ``limit`` seconds."""
        ready, _, _ = select.select([worker.stdout], [], [], limit)
        line = worker.stdout.readline() if ready else ""
        return line.strip() if line else None

    def close(self) -> None:
        """Stop the worker (a later call starts a fresh one)."""
        if self._worker is not None:
            self._worker.kill()
            self._worker.wait()
            self._worker = None

    def __getstate__(self) -> dict:
        # Copies (DDP spawn, deepcopy) get their own worker and lock.
        return {"time_limit": self.time_limit, "timeouts": self.timeouts}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["time_limit"])
        self.timeouts = state["timeouts"]

    def __del__(self) -> None:
        if getattr(self, "_worker", None) is not None:
            self.close()


_default_math_grader: MathGrader | None = None


def grade_math(response: str, answer: str) -> float:
    """MATH reward with the default 5 s limit (one shared worker per process)."""
    global _default_math_grader
    if _default_math_grader is None:
        _default_math_grader = MathGrader()
    return _default_math_grader(response, answer)
