"""What a task is to the trainer: problems, a prompt, a reward and a step splitter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from lit_vine.faults import guarded_reward

Split = Literal["train", "validation", "test"]


@dataclass(frozen=True)
class Problem:
    """One question. ``solution`` is a worked gold solution (used by SFT), ``answer`` the final one."""

    id: str
    question: str
    answer: str
    solution: str = ""


class Task:
    """Base class of tasks. Subclasses define where problems come from and how answers are graded.

    ``on_reward_error`` (``stop`` | ``zero``) and ``reward_time_limit`` (seconds, ``None``: none)
    say what :meth:`score` does when ``reward`` raises, returns NaN or hangs: stop the run with an
    error naming the problem, or score the response 0 and go on (see ``lit_vine.faults``).
    """

    on_reward_error: Literal["stop", "zero"] = "stop"
    reward_time_limit: float | None = None

    def problems(self, split: Split) -> list[Problem]:
        raise NotImplementedError

    def prompt(self, problem: Problem) -> str:
        """The text the policy continues."""
        raise NotImplementedError

    def prompt_ids(self, problem: Problem, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids of the prompt; tasks with chat templates or prompt-length rules override it."""
        return tokenizer(self.prompt(problem)).input_ids

    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Called by ``TaskDataModule.setup`` once the policy's tokenizer is known, before any
        problem is served (a task may drop or truncate prompts that are too long)."""

    def reward(self, response: str, problem: Problem) -> float:
        """1.0 for a correct final answer in ``response``, else 0.0."""
        raise NotImplementedError

    def split_steps(self, response: str) -> list[str]:
        """Reasoning steps of ``response``; they join back to ``response``."""
        raise NotImplementedError

    def extract_answer(self, response: str) -> str | None:
        """The final answer written in ``response`` (for majority voting); ``None`` if none."""
        raise NotImplementedError

    def score(self, response_ids: Sequence[int], problem: Problem, tokenizer: PreTrainedTokenizerBase) -> tuple[str, float]:
        """Decode a sampled response and grade it; a response cut off before EOS scores 0."""
        text = tokenizer.decode(response_ids, skip_special_tokens=True)
        finished = len(response_ids) > 0 and response_ids[-1] == tokenizer.eos_token_id
        return text, (guarded_reward(self, text, problem) if finished else 0.0)
