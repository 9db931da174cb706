"""The MATH reward: the response's final answer against the reference, under a :class:`MathPolicy`,
math-verify deciding in worker processes under a time limit."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lit_vine.grading.answers import (
    as_math_text,
    base_numeral,
    extract_math_answer,
    normalize_math_answer,
    reference_answer,
)
from lit_vine.grading.notation import asks_for_set, choice_letter, ordered_lists, top_level_split, written
from lit_vine.grading.policy import MathPolicy

logger = logging.getLogger(__name__)

Request = str  # a JSON line for the worker: the keyword arguments of equivalence.equal


class GraderTimeout(Exception):
    """The equivalence check ran past its time limit."""


def decide(
    predicted: str, reference: str, policy: MathPolicy, question: str | None = None, shortcut: bool = True
) -> float | Request:
    """The reward of a predicted answer when plain string work settles it, else the worker request
    that settles it.

    Equal normalized strings are equal (unless ``shortcut`` is off: then math-verify must agree); a
    numeral with a base must match digits and base (math-verify reads ``121_3`` as 121); a
    multiple-choice reference is matched by its letter alone.
    Otherwise both answers lose their notation (:func:`~lit_vine.grading.notation.written`) and go
    to math-verify, a bare comma list item by item when the policy wants order.
    """
    gold = reference_answer(reference, policy.boxes)
    if shortcut and normalize_math_answer(predicted) == normalize_math_answer(gold):
        return 1.0
    if (bases := (base_numeral(predicted), base_numeral(gold))) != (None, None):
        return float(bases[0] == bases[1])
    if policy.multiple_choice == "letter" and (letter := choice_letter(gold)):
        return float(choice_letter(predicted) == letter)
    g, p = written(gold, policy), written(predicted, policy)
    if policy.units == "refuse" and g.unit.lower() != p.unit.lower():
        return 0.0
    golds, preds = [g.text], [p.text]
    if policy.percent == "either" and g.percent != p.percent:  # 10\% is 10 and also 0.1
        (golds if g.percent else preds).append(f"\\frac{{{(g if g.percent else p).text}}}{{100}}")
    elif shortcut and normalize_math_answer(g.text) == normalize_math_answer(p.text):
        return 1.0
    ordered = policy.comma_lists == "ordered" or (policy.comma_lists == "question" and not asks_for_set(question))
    if ordered and ordered_lists(g.text, p.text):
        golds, preds = [top_level_split(t) for t in golds], [top_level_split(t) for t in preds]
    else:
        golds, preds = [[t] for t in golds], [[t] for t in preds]
    request = {"golds": golds, "preds": preds, "unevaluated": policy.unevaluated, "float_rounding": policy.float_rounding}
    return json.dumps(request, sort_keys=True)


class MathGrader:
    """MATH reward: 1.0 if the response's final answer is equivalent to the reference answer.

    The answer is read and compared as ``policy`` says (:class:`MathPolicy`; its defaults are the
    strict choices for RL rewards). What plain string work cannot settle, math-verify compares in a
    worker process, so a pathological expression (a huge expansion, an uninterruptible big-integer
    power) is killed after ``time_limit`` seconds wherever the caller runs; math-verify's own
    ``signal.alarm`` timeout works only in the main thread and cannot interrupt C code. A timeout
    scores 0 and is counted in ``timeouts``.

    Verdicts are memoized per request for the grader's life: the Monte Carlo continuations of an
    iteration repeat a few answers many times. :meth:`grade_many` sends the comparisons it does not
    know yet to a pool of ``workers`` processes at once, each under its own time limit. Workers start
    on first use (importing sympy takes seconds; that is not charged to a comparison) and are
    restarted after a timeout.

    Args:
        time_limit: seconds allowed for one comparison.
        workers: math-verify processes; ``None``: one per core.
        memoize: keep verdicts (a timeout's 0 included) for the grader's life.
        policy: what is paid and what is refused.
    """

    _STARTUP_LIMIT = 120.0

    def __init__(self, time_limit: float = 5.0, workers: int | None = None, memoize: bool = True, policy: MathPolicy = MathPolicy()) -> None:
        if time_limit <= 0:
            raise ValueError(f"grader time_limit must be > 0, got {time_limit}")
        if workers is not None and workers < 1:
            raise ValueError(f"grader workers must be >= 1, got {workers}")
        if not isinstance(policy, MathPolicy):
            raise TypeError(f"grader policy must be a MathPolicy, got {type(policy).__name__}")
        self.time_limit, self.memoize, self.policy = time_limit, memoize, policy
        self.workers = workers or os.cpu_count() or 1
        self.timeouts = 0
        self._pool: list[subprocess.Popen | None] = [None] * self.workers
        self._verdicts: dict[Request, bool] = {}
        self._lock = threading.Lock()

    def __call__(self, response: str, answer: str, question: str | None = None) -> float:
        return self.grade_many([(response, answer)], None if question is None else [question])[0]

    def grade_many(
        self, pairs: Sequence[tuple[str, str]], questions: Sequence[str | None] | None = None, policy: MathPolicy | None = None
    ) -> list[float]:
        """Rewards of ``(response, reference answer)`` pairs, the math-verify comparisons of all of
        them run together. ``questions`` (one per pair) inform ``comma_lists="question"``; ``policy``
        replaces the grader's for this call (the workers serve any policy)."""
        if questions is not None and len(questions) != len(pairs):
            raise ValueError(f"grade_many: {len(questions)} questions for {len(pairs)} pairs")
        policy = policy or self.policy
        rewards: list[float | Request] = []
        for (response, answer), question in zip(pairs, questions or [None] * len(pairs)):
            if policy.extraction == "free":
                free = {"golds": [[as_math_text(answer)]], "preds": [[response]], "free": True, "float_rounding": policy.float_rounding}
                rewards.append(json.dumps(free, sort_keys=True))
                continue
            predicted = extract_math_answer(response, policy.boxes)
            rewards.append(0.0 if predicted is None else decide(predicted, answer, policy, question))
        keys = list(dict.fromkeys(r for r in rewards if isinstance(r, str)))
        with self._lock:
            verdicts = self._compare(keys)
        return [float(verdicts[r]) if isinstance(r, str) else r for r in rewards]

    def equivalent(self, gold: str, predicted: str) -> bool:
        """Whether two answers are equal under the policy, math-verify deciding even where the strings
        are equal; raises :class:`GraderTimeout`."""
        decision = decide(predicted, gold, self.policy, shortcut=False)
        if not isinstance(decision, str):
            return bool(decision)
        with self._lock:
            before = self.timeouts
            verdict = self._compare([decision])[decision]
        if self.timeouts > before:
            raise GraderTimeout(f"no verdict within {self.time_limit}s")
        return verdict

    def _compare(self, keys: list[Request]) -> dict[Request, bool]:
        """Verdicts for worker requests: memoized, or from the pool (a timeout is False)."""
        verdicts = {key: self._verdicts[key] for key in keys if key in self._verdicts}
        pending = [key for key in keys if key not in verdicts]
        busy: dict[int, tuple[Request, float]] = {}  # worker -> (request, deadline)
        if pending:
            self._start(range(min(self.workers, len(pending))))
        while pending or busy:
            for w in range(self.workers):
                if pending and w not in busy:
                    self._start([w])
                    key = pending.pop()
                    self._pool[w].stdin.write(key + "\n")
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
                    [sys.executable, "-u", str(Path(__file__).with_name("_worker.py"))],
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
        state = {"time_limit": self.time_limit, "workers": self.workers, "memoize": self.memoize, "policy": self.policy}
        return {**state, "timeouts": self.timeouts}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["time_limit"], state["workers"], state["memoize"], state["policy"])
        self.timeouts = state["timeouts"]

    def __del__(self) -> None:
        if getattr(self, "_pool", None):
            self.close()


_default_math_grader: MathGrader | None = None


def grade_math(response: str, answer: str) -> float:
    """MATH reward with the default policy and 5 s limit (one shared worker per process)."""
    global _default_math_grader
    if _default_math_grader is None:
        _default_math_grader = MathGrader()
    return _default_math_grader(response, answer)
