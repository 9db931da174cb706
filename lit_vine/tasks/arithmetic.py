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
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lit_vine.grading import extract_gsm8k_answer, grade_gsm8k
from lit_vine.steps import split_lines
from lit_vine.tasks.base import Problem, Split, Task



@dataclass(frozen=True)
class Chain:
    start: int
    ops: tuple[tuple[str, int], ...]

    def values(self) -> list[int]:
        out = [self.start]
        for op, x in self.ops:
            out.append(out[-1] + x if op == "+" else out[-1] - x if op == "-" else out[-1] * x)
        return out

    def question(self) -> str:
        return f"Compute {self.start} " + " ".join(f"{op}{x}" for op, x in self.ops) + " from left to right."

    def solution(self, slip_at: int | None = None, slip_by: int = 0, terse: bool = False) -> str:
        """The worked solution; with ``slip_at``, that line's result is off by ``slip_by``;
        ``terse`` drops the working and keeps only the answer line."""
        value, lines = self.start, []
        for i, (op, x) in enumerate(self.ops):
            result = value + x if op == "+" else value - x if op == "-" else value * x
            if i == slip_at:
                result = result + slip_by if result - slip_by < 0 else result - slip_by
            lines.append(f"{value}{op}{x}={result}")
            value = result
        return f"#### {value}" if terse else "\n".join(lines) + f"\n#### {value}"


class ArithmeticTask(Task):
    """Arithmetic chains with deterministic, disjoint train / validation / test splits.

    Args:
        min_ops, max_ops: number of operations (= reasoning steps) per problem.
        max_operand: largest number added or subtracted.
        max_value: every intermediate value stays in ``[0, max_value]``.
        num_train, num_validation, num_test: problems per split.
        slip_rate: fraction of training solutions (the SFT data) that slip once.
        shortcut_rate: fraction of training solutions that give the answer without working.
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
        slip_rate: float = 0.0,
        shortcut_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 1 <= min_ops <= max_ops:
            raise ValueError(f"ArithmeticTask: need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
        if max_operand < 1 or max_value < max_operand:
            raise ValueError(f"ArithmeticTask: need 1 <= max_operand <= max_value, got {max_operand}, {max_value}")
        self.min_ops, self.max_ops = min_ops, max_ops
        self.max_operand, self.max_value = max_operand, max_value
        for name, rate in (("slip_rate", slip_rate), ("shortcut_rate", shortcut_rate)):
            if not 0 <= rate <= 1:
                raise ValueError(f"ArithmeticTask: {name} must be in [0, 1], got {rate}")
        self.sizes = {"train": num_train, "validation": num_validation, "test": num_test}
        self.slip_rate, self.shortcut_rate = slip_rate, shortcut_rate
        self.seed = seed
        self._cache: dict[str, list[Problem]] = {}

    def _chain(self, rng: random.Random) -> Chain:
        value = rng.randint(0, self.max_value)
        start, ops = value, []
        for _ in range(rng.randint(self.min_ops, self.max_ops)):
            choices = []
            if value + 1 <= self.max_value:
                choices.append(("+", rng.randint(1, min(self.max_operand, self.max_value - value))))
            if value >= 1:
                choices.append(("-", rng.randint(1, min(self.max_operand, value))))
            if 1 <= value <= self.max_value // 2:
                choices.append(("*", rng.randint(2, min(9, self.max_value // value))))
            op, x = rng.choice(choices)
            value = value + x if op == "+" else value - x if op == "-" else value * x
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
                    solution = chain.solution(slip_at, slip_by, terse)
                    out[s].append(Problem(f"arith-{s}-{len(out[s])}", q, str(chain.values()[-1]), solution))
            self._cache.update(out)
        return self._cache[split]

    def prompt(self, problem: Problem) -> str:
        return problem.question + "\n"

    def reward(self, response: str, problem: Problem) -> float:
        return grade_gsm8k(response, problem.answer)

    def split_steps(self, response: str) -> list[str]:
        return split_lines(response)

    def extract_answer(self, response: str) -> str | None:
        return extract_gsm8k_answer(response)
