"""The built-in offline task: arithmetic chains solved one operation per line.

    question: "Compute 7 +5 *3 -4 from left to right."
    solution: "7+5=12\n12*3=36\n36-4=32\n#### 32"

Steps are lines, exactly as in GSM8K, so step-level credit assignment is real: a wrong line makes
every later line wrong. Difficulty grows with ``num_ops`` and ``max_value``.

``slip_rate`` makes the *training* solutions imperfect, like human-written data: that fraction
of them slips once (one line's result is off by 1-3 and the chain goes on correctly from the wrong
value, so the final answer is wrong). An SFT model trained on them slips too; the reward always
checks the true answer, so RL has real mistakes to unlearn, at a known step.

``shortcut_rate`` makes that fraction of the training solutions terse: they state the answer
with no working (``#### 32``), as much human-written data does. A tiny model cannot run a chain
in its head, so an SFT model that imitates them often answers at once and is wrong; whether to
show the work is one decision, taken at the first token of every response, that RL can learn
and that carries over to problems it never saw.

``quick_rate`` puts a choice into *every* step: that fraction of the training solutions' steps is
written in a quick form, ``47+18~55``, the way people do sums in their head and drop the carry:
each digit is added (or subtracted) on its own, so the quick result is right exactly when the step
has no carry or borrow, which the step's own digits show (``47+12~59`` is right, ``47+18~55`` is
wrong); the chain goes on from the written value. An SFT model that imitates such data picks the
quick form at random, at each of 5-10 steps, and one quick step with a carry dooms the answer: an
outcome reward says the response failed, not which of its steps did. Learning to keep the quick
form for carry-free steps is a rule that carries over to unseen problems; per-step credit makes it
easy to see (``Task.first_wrong_step`` gives every failed response's culprit for ``lit_vine.blame``).
Use it with ``operations="+"`` (as ``configs/credit.yaml`` does): a dropped carry writes 10 too
little and no later addition can give it back, so the first wrong step is the one that doomed the
answer. With ``"+-"`` a dropped borrow writes 10 too much and cancels an earlier dropped carry
(``37+15~42`` ... ``44-7~47`` ends right), so the first wrong step is often not fatal at all.

In that regime the best policy needs no context (never write the quick form: the worked form is
always right and costs nothing), and an outcome reward teaches it from every failed response at
once. ``show_carries`` and ``length_slack`` make the worked form cost something, so the right
choice depends on the step (``configs/credit_budget.yaml``). With ``show_carries`` a worked step
adds digit by digit and then writes the carries it adds back, ``47+18=55+10=65`` (``47+12=59+0=59``
when there are none): it is the quick line checked for carries, 4-6 characters longer.
``length_slack`` is a length budget in the reward: a response longer than the problem's shortest
correct solution (quick exactly on the carry-free steps, worked on the others) plus ``length_slack``
characters scores 0, like an answer that does not fit its token budget. Checking every step then
overruns the budget (a few checked carry-free steps fit in the slack), skipping a check that has
a carry is wrong, so the quick form must be kept exactly where it is safe: good and bad choices sit
in one response, and an outcome reward cannot tell them apart. ``Task.first_wrong_step`` counts the
step after which no correct answer fits the budget as wrong too (an over-budget response's culprit).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lit_vine.grading import extract_gsm8k_answer, grade_gsm8k
from lit_vine.steps import split_lines
from lit_vine.tasks.base import Problem, Split, Task



def apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def without_carry(op: str, a: int, b: int) -> int:
    """``a op b`` digit by digit, each digit's sum or difference kept mod 10 (carries and borrows
    dropped): equal to ``a op b`` exactly when the step has no carry or borrow."""
    width = max(len(str(a)), len(str(b)))
    digits = [(int(da) + (1 if op == "+" else -1) * int(db)) % 10 for da, db in zip(str(a).zfill(width), str(b).zfill(width))]
    return int("".join(map(str, digits)))


def step_line(op: str, a: int, b: int, form: str) -> tuple[str, int]:
    """One step written in ``form`` and the value the chain goes on from: ``worked`` (``47+18=65``),
    ``quick`` (``47+18~55``, carries dropped) or ``checked`` (``47+18=55+10=65``: the quick sum,
    then the carries added back). Multiplications, and steps from a negative value, are always
    written worked."""
    result = apply(op, a, b)
    if op not in "+-" or a < 0 or form == "worked":
        return f"{a}{op}{b}={result}", result
    digits = without_carry(op, a, b)
    if form == "quick":
        return f"{a}{op}{b}~{digits}", digits
    carry = result - digits  # an addition's carries add, a subtraction's borrows take away
    return f"{a}{op}{b}={digits}{'-' if carry < 0 or (carry == 0 and op == '-') else '+'}{abs(carry)}={result}", result


_QUESTION = re.compile(r"Compute (-?\d+) ((?:[+\-*]\d+ ?)+) from left to right\.")
_STEP = re.compile(r"(-?\d+)([+\-*])(\d+)[=~](-?\d+)")
_CHECKED_STEP = re.compile(r"(-?\d+)([+\-])(\d+)=(\d+)([+\-]\d+)=(-?\d+)")


def parse_step(line: str) -> tuple[int, str, int, int] | None:
    """``(a, op, b, result)`` of a step line in any form; ``None`` if it is not one, or if a checked
    line's quick sum or carries are not what it adds (``47+18=55+10=65`` is right, ``47+18=55+0=65``
    is not)."""
    if match := _STEP.fullmatch(line):
        return int(match[1]), match[2], int(match[3]), int(match[4])
    if match := _CHECKED_STEP.fullmatch(line):
        a, op, b, result = int(match[1]), match[2], int(match[3]), int(match[6])
        if (int(match[4]), int(match[4]) + int(match[5])) == (without_carry(op, a, b), result):
            return a, op, b, result
    return None


@dataclass(frozen=True)
class Chain:
    start: int
    ops: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, question: str) -> Chain:
        match = _QUESTION.fullmatch(question.strip())
        if match is None:
            raise ValueError(f"not an arithmetic-chain question: {question!r}")
        return cls(int(match[1]), tuple((op[0], int(op[1:])) for op in match[2].split()))

    def values(self) -> list[int]:
        out = [self.start]
        for op, x in self.ops:
            out.append(apply(op, out[-1], x))
        return out

    def question(self) -> str:
        return f"Compute {self.start} " + " ".join(f"{op}{x}" for op, x in self.ops) + " from left to right."

    def solution(
        self, slip_at: int | None = None, slip_by: int = 0, terse: bool = False, quick: frozenset[int] = frozenset(), show_carries: bool = False
    ) -> str:
        """The worked solution; with ``slip_at``, that line's result is off by ``slip_by``;
        ``terse`` drops the working and keeps only the answer line; the steps in ``quick`` are
        written in the quick form (``a+b~c``, carries dropped) where an addition or subtraction of
        non-negative numbers allows it; with ``show_carries`` the other steps are checked for
        carries (``a+b=c+10=d``, see :func:`step_line`)."""
        value, lines = self.start, []
        for i, (op, x) in enumerate(self.ops):
            line, result = step_line(op, value, x, "quick" if i in quick else "checked" if show_carries else "worked")
            if i == slip_at:
                slipped = result + slip_by if result - slip_by < 0 else result - slip_by
                line, result = line[: len(line) - len(str(result))] + str(slipped), slipped
            lines.append(line)
            value = result
        return f"#### {value}" if terse else "\n".join(lines) + f"\n#### {value}"

    def carry_free(self) -> frozenset[int]:
        """The steps whose quick form is right (no carry or borrow)."""
        values = self.values()
        return frozenset(i for i, (op, x) in enumerate(self.ops) if step_line(op, values[i], x, "quick")[1] == values[i + 1])

    def shortest_solution(self, show_carries: bool) -> str:
        """The shortest correct solution: quick exactly on the carry-free steps."""
        return self.solution(quick=self.carry_free(), show_carries=show_carries)

    def first_wrong_step(self, steps: list[str], budget: int | None = None, show_carries: bool = True) -> int | None:
        """Index of the first of ``steps`` (a response split into lines, the answer line in the
        last step) that is not the chain's next true step, or whose answer is wrong, or (with a
        length ``budget`` in characters) after which not even the shortest correct rest of the
        solution (written as ``show_carries`` says) fits; ``None`` if every step is right."""
        values = self.values()
        shortest = self.shortest_solution(show_carries).split("\n") if budget is not None else []  # the lines, then "#### <answer>"
        written = 0
        for i, step in enumerate(steps):
            line = step.lstrip("\n").partition("\n")[0]
            if i < len(self.ops):
                if parse_step(line.strip()) != (values[i], *self.ops[i], values[i + 1]):
                    return i
            elif "####" not in line:
                return i  # a line the chain does not have
            if i == len(steps) - 1:  # the answer is in the last step
                answer = extract_gsm8k_answer(step)
                if len(steps) < len(self.ops) or answer is None or int(float(answer)) != values[-1]:
                    return i
            written += len(step)
            rest = 0 if "####" in step else sum(1 + len(s) for s in shortest[i + 1 :])
            if budget is not None and written + rest > budget:
                return i
        return None if steps else 0


class ArithmeticTask(Task):
    """Arithmetic chains with deterministic, disjoint train / validation / test splits.

    Args:
        min_ops, max_ops: number of operations (= reasoning steps) per problem.
        max_operand: largest number added or subtracted.
        max_value: every intermediate value stays in ``[0, max_value]``.
        num_train, num_validation, num_test: problems per split.
        operations: which of ``+``, ``-``, ``*`` chains use.
        slip_rate: fraction of training solutions (the SFT data) that slip once.
        shortcut_rate: fraction of training solutions that give the answer without working.
        quick_rate: fraction of training solution steps written in the quick form (carries dropped).
        show_carries: the training solutions' other steps are checked for carries (``47+18=55+10=65``).
        length_slack: the reward's length budget: a response longer than the shortest correct
            solution plus this many characters scores 0. ``None``: no budget.
        seed: the splits are a function of the seed alone.
    """

    def __init__(
        self,
        min_ops: int = 3,
        max_ops: int = 4,
        max_operand: int = 20,
        max_value: int = 99,
        num_train: int = 20000,
        num_validation: int = 200,
        num_test: int = 400,
        operations: str = "+-*",
        slip_rate: float = 0.0,
        shortcut_rate: float = 0.0,
        quick_rate: float = 0.0,
        show_carries: bool = False,
        length_slack: int | None = None,
        seed: int = 0,
    ) -> None:
        if not 1 <= min_ops <= max_ops:
            raise ValueError(f"ArithmeticTask: need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
        if max_operand < 1 or max_value < max_operand:
            raise ValueError(f"ArithmeticTask: need 1 <= max_operand <= max_value, got {max_operand}, {max_value}")
        self.min_ops, self.max_ops = min_ops, max_ops
        self.max_operand, self.max_value = max_operand, max_value
        for name, rate in (("slip_rate", slip_rate), ("shortcut_rate", shortcut_rate), ("quick_rate", quick_rate)):
            if not 0 <= rate <= 1:
                raise ValueError(f"ArithmeticTask: {name} must be in [0, 1], got {rate}")
        if not operations or set(operations) - set("+-*"):
            raise ValueError(f"ArithmeticTask: operations must be some of '+-*', got {operations!r}")
        self.sizes = {"train": num_train, "validation": num_validation, "test": num_test}
        self.operations = operations
        if length_slack is not None and length_slack < 0:
            raise ValueError(f"ArithmeticTask: length_slack must be >= 0 or null, got {length_slack}")
        self.slip_rate, self.shortcut_rate, self.quick_rate = slip_rate, shortcut_rate, quick_rate
        self.show_carries, self.length_slack = show_carries, length_slack
        self.seed = seed
        self._cache: dict[str, list[Problem]] = {}

    def _chain(self, rng: random.Random) -> Chain:
        value = rng.randint(0, self.max_value)
        start, ops = value, []
        for _ in range(rng.randint(self.min_ops, self.max_ops)):
            choices = []  # drawn in this order whatever `operations` is, so default data never changes
            if value + 1 <= self.max_value:
                choices.append(("+", rng.randint(1, min(self.max_operand, self.max_value - value))))
            if value >= 1:
                choices.append(("-", rng.randint(1, min(self.max_operand, value))))
            if 1 <= value <= self.max_value // 2:
                choices.append(("*", rng.randint(2, min(9, self.max_value // value))))
            op, x = rng.choice([c for c in choices if c[0] in self.operations] or choices)
            value = apply(op, value, x)
            ops.append((op, x))
        return Chain(start, tuple(ops))

    def problems(self, split: Split) -> list[Problem]:
        if split not in self._cache:
            # Splits are drawn from one stream and kept disjoint by question text, so a test
            # question never appears in training whatever the sizes.
            rng = random.Random(self.seed)
            # Slips and shortcuts have their own streams: they never change which questions are drawn.
            slip_rng = random.Random(f"{self.seed}/slips")
            shortcut_rng = random.Random(f"{self.seed}/shortcuts")
            quick_rng = random.Random(f"{self.seed}/quick")
            seen: set[str] = set()
            out: dict[str, list[Problem]] = {s: [] for s in self.sizes}
            order = ["test", "validation", "train"]
            for s in order:
                tries = 0
                while len(out[s]) < self.sizes[s]:
                    chain = self._chain(rng)
                    tries += 1
                    if tries > 50 * self.sizes[s] + 1000:
                        raise ValueError(f"ArithmeticTask: cannot draw {self.sizes[s]} distinct {s} problems; raise max_value or max_ops")
                    q = chain.question()
                    if q in seen:
                        continue
                    seen.add(q)
                    slips = s == "train" and slip_rng.random() < self.slip_rate
                    terse = s == "train" and shortcut_rng.random() < self.shortcut_rate
                    slip_at, slip_by = (slip_rng.randrange(len(chain.ops)), slip_rng.randint(1, 3)) if slips else (None, 0)
                    quick = frozenset(i for i in range(len(chain.ops)) if quick_rng.random() < self.quick_rate) if s == "train" and self.quick_rate else frozenset()
                    if s != "train" and self.show_carries:
                        quick = chain.carry_free()  # held-out gold: the shortest correct solution
                    solution = chain.solution(slip_at, slip_by, terse, quick, self.show_carries)
                    out[s].append(Problem(f"arith-{s}-{len(out[s])}", q, str(chain.values()[-1]), solution))
            self._cache.update(out)
        return self._cache[split]

    def prompt(self, problem: Problem) -> str:
        return problem.question + "\n"

    def budget(self, problem: Problem) -> int | None:
        """The reward's length budget for ``problem`` in characters (``None``: no budget)."""
        if self.length_slack is None:
            return None
        return len(Chain.parse(problem.question).shortest_solution(self.show_carries)) + self.length_slack

    def reward(self, response: str, problem: Problem) -> float:
        budget = self.budget(problem)
        return grade_gsm8k(response, problem.answer) if budget is None or len(response) <= budget else 0.0

    def split_steps(self, response: str) -> list[str]:
        return split_lines(response)

    def extract_answer(self, response: str) -> str | None:
        return extract_gsm8k_answer(response)

    checks_steps = True

    def first_wrong_step(self, response: str, problem: Problem) -> int | None:
        return Chain.parse(problem.question).first_wrong_step(self.split_steps(response), self.budget(problem), self.show_carries)
