"""Math word problems from a dataset: GSM8K, MATH or any file / hub dataset with a column mapping.

    DatasetTask(source="openai/gsm8k", config="main", solution_field="answer", answer_field=None)
    DatasetTask(train="my/train.jsonl", test="my/test.jsonl", answer_format="math")

Graders and step splitters are chosen by name or by a dotted import path, so a custom reward is
one function ``(response: str, problem: Problem) -> float`` named in the YAML.
"""

from __future__ import annotations

import importlib
import logging
import random
import re
from collections.abc import Callable, Sequence
from typing import Literal

from transformers import PreTrainedTokenizerBase

from lit_vine.grading import (
    GSM8KPolicy,
    MathGrader,
    MathPolicy,
    extract_gsm8k_answer,
    extract_math_answer,
    grade_gsm8k,
    normalize_math_answer,
)
from lit_vine.steps import split_lines, split_math
from lit_vine.tasks.base import Problem, Split, Task
from lit_vine.tasks.loading import DataError, Rows, load_split
from lit_vine.tasks.prompts import PromptFormat

logger = logging.getLogger(__name__)

SPLITTERS: dict[str, Callable[[str], list[str]]] = {"lines": split_lines, "math": split_math}
DEFAULT_SPLITTER = {"gsm8k": "lines", "math": "math"}
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<48/2=24>>" calculator annotations


def import_callable(path: str, what: str) -> Callable:
    """``package.module:function`` or ``package.module.function`` -> the function."""
    module, sep, name = path.partition(":") if ":" in path else path.rpartition(".")
    if not (sep and module and name):
        raise ValueError(f"{what} {path!r}: not a built-in name nor 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what} {path!r}: cannot import ({err})") from None


class DatasetTask(Task):
    """Problems read from files or the hub; rewards, answers and steps in GSM8K or MATH style.

    Args:
        source: hub dataset name, or a local folder (a ``save_to_disk`` dataset or
            ``<split>.jsonl|json|parquet`` files); the split names below are looked up in it.
        config: hub configuration name (``main`` for ``openai/gsm8k``).
        train, validation, test: per split: a split name of ``source``, a local file
            (``.jsonl``/``.json``/``.parquet``), or ``<folder or hub name>@<split>``; ``None``: none.
        num_validation: with no ``validation``, this many train problems (a fixed random choice
            by ``seed``) become the validation split and leave train.
        question_field, solution_field, answer_field, id_field: column names. ``solution_field``
            (worked solution, the SFT target) may be ``None``; with ``answer_field=None`` the
            answer is read from the solution (``#### x`` or the last ``\\boxed{x}``); with
            ``id_field=None`` ids are ``<split>-<row>``.
        answer_format: ``gsm8k`` (``#### number``, numeric compare) or ``math`` (``\\boxed{}``,
            math-verify): how answers are read from solutions and responses.
        grader: ``gsm8k``, ``math`` or ``package.module:function`` taking ``(response, problem)``
            and returning a float reward; default: the ``answer_format``'s.
        grader_time_limit: seconds per MATH equivalence check (a timeout scores 0).
        math_policy: how MATH answers are read and compared (``docs/grading.md``); the defaults are
            the strict choices for rewards. The question informs ``comma_lists="question"``.
        gsm8k_policy: how GSM8K ``####`` answers are read and compared (``reading: authors`` is
            the VinePPO authors' string match, kept by the paper presets).
        on_reward_error: when the grader raises, returns NaN or runs past ``reward_time_limit``:
            ``stop`` the run with an error naming the problem, or score the response ``zero``
            (warned and counted) and go on.
        reward_time_limit: seconds one call of a custom ``grader`` may take (``None``: no limit;
            the built-in graders need none: MATH's has ``grader_time_limit``).
        step_splitter: ``lines``, ``math`` or ``package.module:function`` (text -> pieces that
            join back to it); default: ``lines`` for gsm8k, ``math`` for math.
        prompt: prompt style and template.
        max_prompt_tokens: prompts longer than this (in the policy's tokens) are reported once per
            split and handled by ``long_prompts``; ``None``: no limit.
        long_prompts: ``skip`` drops those problems from their split; ``truncate`` keeps them
            and cuts the prompt from the left (BOS kept), so the question's end and the
            ``Solution:`` cue the model continues stay.
        strip_calculator_annotations: remove GSM8K's ``<<...>>`` from solutions.
        seed: validation carve-out and few-shot example choice.
    """

    def __init__(
        self,
        source: str | None = None,
        config: str | None = None,
        train: str | None = "train",
        validation: str | None = None,
        test: str | None = "test",
        num_validation: int = 0,
        question_field: str = "question",
        solution_field: str | None = "solution",
        answer_field: str | None = "answer",
        id_field: str | None = None,
        answer_format: Literal["gsm8k", "math"] = "gsm8k",
        grader: str | None = None,
        grader_time_limit: float = 5.0,
        math_policy: MathPolicy = MathPolicy(),
        gsm8k_policy: GSM8KPolicy = GSM8KPolicy(),
        on_reward_error: Literal["stop", "zero"] = "stop",
        reward_time_limit: float | None = 30.0,
        step_splitter: str | None = None,
        prompt: PromptFormat = PromptFormat(),
        max_prompt_tokens: int | None = None,
        long_prompts: Literal["skip", "truncate"] = "skip",
        strip_calculator_annotations: bool = False,
        seed: int = 0,
    ) -> None:
        if solution_field is None and answer_field is None:
            raise ValueError("DatasetTask: solution_field and answer_field cannot both be None")
        if num_validation < 0 or (num_validation and validation is not None):
            raise ValueError("DatasetTask: num_validation must be >= 0 and is only used when validation is None")
        if max_prompt_tokens is not None and max_prompt_tokens < 2:
            raise ValueError(f"DatasetTask: max_prompt_tokens must be >= 2, got {max_prompt_tokens}")
        self.source, self.config = source, config
        self.specs: dict[str, str | None] = {"train": train, "validation": validation, "test": test}
        self.num_validation, self.seed = num_validation, seed
        self.fields = {"question": question_field, "solution": solution_field, "answer": answer_field, "id": id_field}
        self.answer_format = answer_format
        self.grader_name = grader or answer_format
        self._grader = None if self.grader_name in ("gsm8k", "math") else import_callable(self.grader_name, "grader")
        if on_reward_error not in ("stop", "zero"):
            raise ValueError(f"DatasetTask: on_reward_error must be 'stop' or 'zero', got {on_reward_error!r}")
        if reward_time_limit is not None and reward_time_limit <= 0:
            raise ValueError(f"DatasetTask: reward_time_limit must be > 0 or null, got {reward_time_limit}")
        self.on_reward_error = on_reward_error
        self.reward_time_limit = reward_time_limit if self._grader is not None else None
        self.math_policy, self.gsm8k_policy = math_policy, gsm8k_policy
        self._math_grader = MathGrader(grader_time_limit, policy=math_policy)
        splitter = step_splitter or DEFAULT_SPLITTER[answer_format]
        self._split_steps = SPLITTERS.get(splitter) or import_callable(splitter, "step_splitter")
        self.prompt_format = prompt
        self.max_prompt_tokens, self.long_prompts = max_prompt_tokens, long_prompts
        self.strip_calculator_annotations = strip_calculator_annotations
        self._loaded: dict[str, list[Problem]] = {}
        self._served: dict[str, list[Problem]] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None

    # ----- problems --------------------------------------------------------------------------
    def problems(self, split: Split) -> list[Problem]:
        if split not in self._served:
            problems = self._all(split)
            if self._tokenizer is not None and self.max_prompt_tokens is not None:
                problems = self._limit_prompts(split, problems)
            self._served[split] = problems
        return self._served[split]

    def _all(self, split: str) -> list[Problem]:
        if split not in self._loaded:
            if split in ("train", "validation") and self.specs["validation"] is None and self.num_validation:
                self._carve_validation()
            else:
                spec = self.specs[split]
                self._loaded[split] = [] if spec is None else self._to_problems(split, *load_split(spec, self.source, self.config))
        return self._loaded[split]

    def _carve_validation(self) -> None:
        spec = self.specs["train"]
        if spec is None:
            raise ValueError("DatasetTask: num_validation needs a train split to carve from")
        train = self._to_problems("train", *load_split(spec, self.source, self.config))
        if self.num_validation >= len(train):
            raise ValueError(f"DatasetTask: num_validation={self.num_validation} leaves no training problem (train has {len(train)})")
        chosen = set(random.Random(self.seed).sample(range(len(train)), self.num_validation))
        self._loaded["validation"] = [p for i, p in enumerate(train) if i in chosen]
        self._loaded["train"] = [p for i, p in enumerate(train) if i not in chosen]

    def _to_problems(self, split: str, origin: str, rows: Rows) -> list[Problem]:
        problems = []
        for number, row in rows:
            def field(role: str) -> str:
                name = self.fields[role]
                if name not in row:
                    raise DataError(f"{origin}, row {number}: field {name!r} ({role}) is missing; the row has {sorted(row)}")
                value = row[name]
                if value is None or not str(value).strip():
                    raise DataError(f"{origin}, row {number}: field {name!r} ({role}) is empty")
                return str(value)

            solution = field("solution") if self.fields["solution"] else ""
            if self.strip_calculator_annotations:
                solution = _CALCULATOR.sub("", solution)
            answer = field("answer") if self.fields["answer"] else self._answer_from_solution(solution)
            if answer is None:
                expected = "#### <answer>" if self.answer_format == "gsm8k" else "\\boxed{<answer>}"
                raise DataError(f"{origin}, row {number}: no final answer in field {self.fields['solution']!r} (expected {expected})")
            problem_id = field("id") if self.fields["id"] else f"{split}-{number}"
            problems.append(Problem(problem_id, field("question"), answer, solution))
        return problems

    def _answer_from_solution(self, solution: str) -> str | None:
        if self.answer_format == "gsm8k":
            return extract_gsm8k_answer(solution, self.gsm8k_policy)
        return extract_math_answer(solution, self.math_policy.boxes)

    # ----- prompts ---------------------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        return self.prompt_format.text(problem.question, self._shots(problem))

    def _shots(self, problem: Problem) -> list[tuple[str, str]]:
        if self.prompt_format.style != "few_shot":
            return []
        if "shots" not in self._loaded:
            train = self._all("train")
            if not train or not train[0].solution:
                raise ValueError("DatasetTask: few_shot prompts need train problems with solutions")
            count = min(len(train), self.prompt_format.num_shots + 1)  # one spare replaces the problem itself
            self._loaded["shots"] = random.Random(self.seed + 1).sample(train, count)
        pool = [p for p in self._loaded["shots"] if p.id != problem.id][: self.prompt_format.num_shots]
        return [(p.question, p.solution) for p in pool]

    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._served.clear()  # the prompt-length rule now applies

    def prompt_ids(self, problem: Problem, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        ids = self.prompt_format.ids(self.prompt(problem), tokenizer)
        limit = self.max_prompt_tokens
        if limit is None or len(ids) <= limit or self.long_prompts != "truncate":
            return ids
        keep_bos = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
        return ids[:1] + ids[len(ids) - limit + 1 :] if keep_bos else ids[len(ids) - limit :]

    def _limit_prompts(self, split: str, problems: list[Problem]) -> list[Problem]:
        """Report (once per split) the prompts over ``max_prompt_tokens``; drop them for ``skip``."""
        long = [i for i, p in enumerate(problems) if len(self.prompt_format.ids(self.prompt(p), self._tokenizer)) > self.max_prompt_tokens]
        if not long:
            return problems
        action = "skipped" if self.long_prompts == "skip" else "truncated from the left"
        logger.warning(
            "%d of %d %s prompts are longer than max_prompt_tokens=%d and are %s (first: %s)",
            len(long), len(problems), split, self.max_prompt_tokens, action, ", ".join(problems[i].id for i in long[:5]),
        )
        if self.long_prompts == "truncate":
            return problems
        dropped = set(long)
        return [p for i, p in enumerate(problems) if i not in dropped]

    # ----- rewards, answers, steps -----------------------------------------------------------
    def reward(self, response: str, problem: Problem) -> float:
        if self._grader is not None:
            return float(self._grader(response, problem))
        if self.grader_name == "math":
            return self._math_grader(response, problem.answer, problem.question)
        return grade_gsm8k(response, problem.answer, self.gsm8k_policy)

    def rewards(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        if self._grader is None and self.grader_name == "math":  # one batched call to the worker pool
            return self._math_grader.grade_many([(text, p.answer) for text, p in zip(responses, problems)], [p.question for p in problems])
        return super().rewards(responses, problems)

    @property
    def grader_timeouts(self) -> int:
        """MATH equivalence checks that ran out of time so far (each scored 0)."""
        return self._math_grader.timeouts

    def extract_answer(self, response: str) -> str | None:
        if self.answer_format == "gsm8k":
            return extract_gsm8k_answer(response, self.gsm8k_policy)
        answer = extract_math_answer(response, self.math_policy.boxes)
        return None if answer is None else normalize_math_answer(answer)

    def split_steps(self, response: str) -> list[str]:
        return self._split_steps(response)
