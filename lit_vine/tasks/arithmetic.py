"""The built-in offline task: arithmetic chains solved one operation per line.

    question: "Compute 7 +5 *3 -4 from left to right."
    solution: "7+5=12\n12*3=36\n36-4=32\n#### 32"

Steps are lines, exactly as in GSM8K, so step-level credit assignment is real: a wrong line makes
every later line wrong. Difficulty grows with ``num_ops`` and ``max_value``.
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

    def solution(self) -> str:
        v = self.values()
        lines = [f"{v[i]}{op}{x}={v[i + 1]}" for i, (op, x) in enumerate(self.ops)]
        return "\n".join(lines) + f"\n#### {v[-1]}"


class ArithmeticTask(Task):
    """Arithmetic chains with deterministic, disjoint train / validation / test splits.

    Args:
        min_ops, max_ops: number of operations (= reasoning steps) per problem.
        max_operand: largest number added or subtracted.
        max_value: every intermediate value stays in ``[0, max_value]``.
        num_train, num_validation, num_test: problems per split.
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
        seed: int = 0,
    ) -> None:
        if not 1 <= min_ops <= max_ops:
            raise ValueError(f"ArithmeticTask: need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
        if max_operand < 1 or max_value < max_operand:
            raise ValueError(f"ArithmeticTask: need 1 <= max_operand <= max_value, got {max_operand}, {max_value}")
        self.min_ops, self.max_ops = min_ops, max_ops
        self.max_operand, self.max_value = max_operand, max_value
        self.sizes = {"train": num_train, "validation": num_validation, "test": num_test}
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
                    out[s].append(Problem(f"arith-{s}-{len(out[s])}", q, str(chain.values()[-1]), chain.solution()))
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
